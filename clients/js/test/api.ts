// The JavaScript in src/ (typed by its JSDoc) must satisfy the declarations in types/ that
// TypeScript users see: `tsc --noEmit` fails if the two drift apart.
import type * as Api from "../types/index.js";
import type * as ReactApi from "../types/react.js";
import type * as WidgetApi from "../types/widget.js";
import * as core from "../src/index.js";
import * as react from "../src/react.js";
import * as widget from "../src/widget.js";

/** True when A and B export the same names. */
type SameNames<A, B> = [Exclude<keyof A, keyof B>, Exclude<keyof B, keyof A>] extends [never, never]
  ? true
  : false;

export const coreMatches: typeof Api = core;
export const reactMatches: typeof ReactApi = react;
export const widgetMatches: typeof WidgetApi = widget;
export const sameNames: [
  SameNames<typeof core, typeof Api>,
  SameNames<typeof react, typeof ReactApi>,
  SameNames<typeof widget, typeof WidgetApi>,
] = [true, true, true];
