/*
 * The coordinator's teaching arithmetic in WebAssembly SIMD128 (compiled by
 * shared/engine/wasm-training/native/build.sh into teaching-kernels-wasm.ts; see teaching.ts).
 * Every operation is the one teaching.ts would do in JavaScript, in the same order, so results
 * are bit-identical: float32 probabilities promoted to float64, summed, differenced, scaled, and
 * rounded to float32 (round to nearest even) once at the end.
 */
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name))) name

/* sum[k] = 0 + p[k] when `first`, else sum[k] += p[k] (float64 sums of float32 values). */
void EXPORT(sum_add)(double *sum, const float *p, int n, int first) {
  int k = 0;
  if (first) {
    /* 0 + p rather than p: the same value, but -0 becomes +0 as in a sum that starts at 0. */
    v128_t zero = wasm_f64x2_splat(0.0);
    for (; k + 4 <= n; k += 4) {
      v128_t v = wasm_v128_load(p + k);
      wasm_v128_store(sum + k, wasm_f64x2_add(zero, wasm_f64x2_promote_low_f32x4(v)));
      wasm_v128_store(sum + k + 2, wasm_f64x2_add(zero, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1))));
    }
    for (; k < n; k++) sum[k] = 0.0 + (double)p[k];
  } else {
    for (; k + 4 <= n; k += 4) {
      v128_t v = wasm_v128_load(p + k);
      wasm_v128_store(sum + k, wasm_f64x2_add(wasm_v128_load(sum + k), wasm_f64x2_promote_low_f32x4(v)));
      wasm_v128_store(sum + k + 2, wasm_f64x2_add(wasm_v128_load(sum + k + 2),
                                                  wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1))));
    }
    for (; k < n; k++) sum[k] += (double)p[k];
  }
}

/* out[k] = (float)((sum[k] - p[k]) * scale): the mean of the others. `out` may be `p` (each
   group of 4 values is read before it is written). */
void EXPORT(leave_one_out)(const double *sum, const float *p, float *out, int n, double scale) {
  int k = 0;
  v128_t s = wasm_f64x2_splat(scale);
  for (; k + 4 <= n; k += 4) {
    v128_t v = wasm_v128_load(p + k);
    v128_t lo = wasm_f64x2_mul(wasm_f64x2_sub(wasm_v128_load(sum + k), wasm_f64x2_promote_low_f32x4(v)), s);
    v128_t hi = wasm_f64x2_mul(wasm_f64x2_sub(wasm_v128_load(sum + k + 2),
                                              wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1))), s);
    v128_t a = wasm_f32x4_demote_f64x2_zero(lo);
    v128_t b = wasm_f32x4_demote_f64x2_zero(hi);
    wasm_v128_store(out + k, wasm_i32x4_shuffle(a, b, 0, 1, 4, 5));
  }
  for (; k < n; k++) out[k] = (float)((sum[k] - (double)p[k]) * scale);
}

/* out[k] = (float)(sum[k] / count): the mean of all (a teacher ensemble). */
void EXPORT(mean)(const double *sum, float *out, int n, double count) {
  int k = 0;
  v128_t c = wasm_f64x2_splat(count);
  for (; k + 4 <= n; k += 4) {
    v128_t a = wasm_f32x4_demote_f64x2_zero(wasm_f64x2_div(wasm_v128_load(sum + k), c));
    v128_t b = wasm_f32x4_demote_f64x2_zero(wasm_f64x2_div(wasm_v128_load(sum + k + 2), c));
    wasm_v128_store(out + k, wasm_i32x4_shuffle(a, b, 0, 1, 4, 5));
  }
  for (; k < n; k++) out[k] = (float)(sum[k] / count);
}
