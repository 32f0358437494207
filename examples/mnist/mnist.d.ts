/** The part of the `mnist` package (1.1.0, no typings of its own) that the example uses. */
declare module 'mnist' {
  interface Digit {
    /** How many samples of this digit the package holds. */
    length: number;
    /** Sample `which` as 784 numbers in [0, 1], row by row. */
    get(which: number): number[];
  }
  const digits: { readonly [digit: number]: Digit };
  export = digits;
}
