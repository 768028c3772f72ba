"""`python -m nexus_ingest`: the `nexus` command, also how `nexus up` starts its worker."""

import sys

from nexus_ingest.cli import main

sys.exit(main())
