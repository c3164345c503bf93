/** How far two lists of weight arrays are apart, in words, for failure messages of bit-for-bit comparisons. */
export function weightDifferences(actual: ArrayLike<number>[], expected: ArrayLike<number>[]): string {
  let differ = 0;
  let total = 0;
  let largest = 0;
  actual.forEach((a, i) => {
    for (let j = 0; j < a.length; j++) {
      total++;
      if (!Object.is(a[j], expected[i][j])) differ++;
      largest = Math.max(largest, Math.abs(a[j] - expected[i][j]));
    }
  });
  return `${differ} of ${total} entries differ (${((100 * differ) / total).toFixed(1)}%), the largest by ${largest}`;
}
