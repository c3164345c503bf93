/*
 * Native training kernels for tfjs's wasm backend, compiled to WebAssembly with SIMD128 by
 * build.sh, which embeds the module in kernels-wasm.ts.
 *
 * The module IMPORTS THE BACKEND'S OWN MEMORY (env.memory) and works in place on tensors that
 * live there: every pointer argument is a byte offset into the backend's heap
 * (backend.dataIdMap.get(t.dataId).memoryOffset). It therefore must never write anywhere but
 * the output pointers it is given. The rules that guarantee this:
 *   - no static or global variables and no string or array constants: the module has no data
 *     segment (a data segment would be copied into the backend's heap at instantiation);
 *   - no shadow stack: every exported function is a leaf with scalar (and v128) locals only,
 *     nothing whose address is taken, no arrays, no structs, no calls (helpers are
 *     always_inline), so clang never touches __stack_pointer (global 0), whose stack would lie
 *     in memory the backend owns;
 *   - no malloc, no libc (-nostdlib -ffreestanding -fno-builtin, so no memset/memcpy calls).
 * build.sh fails if the linked module has a Data section, or if its disassembly reads or
 * writes any global; test/wasm-native-kernels.test.ts checks the data section again.
 *
 * All tensors are float32; 4-D tensors are NHWC.
 */
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name))) name

/*
 * One 4-channel block of one pooling window of FH x FW pixels (the window already clipped to
 * the input): p, g and q point at the block's channels in the window's first pixel of x, in dy
 * and in dx. Keeps the best value and the best window position (0 .. FH*FW-1, or -1 for none)
 * per lane, then passes over the window again with share = (position == best ? dy : +0):
 * disjoint windows store it (this also zeroes the window's other pixels), overlapping windows
 * add it, which is exactly the scalar scatter (x + +0 == x, and dx never holds -0).
 * Always inlined, so with constant FH and FW the window loops unroll completely.
 */
static inline __attribute__((always_inline)) void window_block(const float *p, const float *g, float *q,
                                                               unsigned rowStride, unsigned channels,
                                                               const int FH, const int FW, const int disjoint) {
  v128_t best = wasm_f32x4_splat(-__builtin_inff());
  v128_t at = wasm_i32x4_splat(-1);
  for (int h = 0; h < FH; h++) {
    for (int w = 0; w < FW; w++) {
      const v128_t v = wasm_v128_load(p + h * rowStride + w * channels);
      const v128_t greater = wasm_f32x4_gt(v, best);
      best = wasm_v128_bitselect(v, best, greater);
      at = wasm_v128_bitselect(wasm_i32x4_splat(h * FW + w), at, greater);
    }
  }
  const v128_t grad = wasm_v128_load(g);
  for (int h = 0; h < FH; h++) {
    for (int w = 0; w < FW; w++) {
      float *o = q + h * rowStride + w * channels;
      const v128_t share = wasm_v128_and(grad, wasm_i32x4_eq(at, wasm_i32x4_splat(h * FW + w)));
      wasm_v128_store(o, disjoint ? share : wasm_f32x4_add(wasm_v128_load(o), share));
    }
  }
}

/* window_block for a single channel (the channels % 4 that do not fill a v128). */
static inline __attribute__((always_inline)) void window_lane(const float *p, const float *g, float *q,
                                                              unsigned rowStride, unsigned channels,
                                                              const int FH, const int FW, const int disjoint) {
  float best = -__builtin_inff();
  int at = -1;
  for (int h = 0; h < FH; h++) {
    for (int w = 0; w < FW; w++) {
      const float v = p[h * rowStride + w * channels];
      if (v > best) {
        best = v;
        at = h * FW + w;
      }
    }
  }
  if (disjoint) {
    for (int h = 0; h < FH; h++)
      for (int w = 0; w < FW; w++) q[h * rowStride + w * channels] = h * FW + w == at ? *g : 0.0f;
  } else if (at >= 0) {
    q[(at / FW) * rowStride + (at % FW) * channels] += *g;
  }
}

/* All channel blocks of one window, FH x FW and disjoint being compile-time constants or not. */
#define WINDOW(FH, FW, DISJOINT)                                                                     \
  do {                                                                                               \
    unsigned c = 0;                                                                                  \
    for (; c < vecChannels; c += 4)                                                                  \
      window_block(x + base + c, g + c, dx + base + c, rowStride, (unsigned)channels, FH, FW, DISJOINT); \
    for (; c < (unsigned)channels; c++)                                                              \
      window_lane(x + base + c, g + c, dx + base + c, rowStride, (unsigned)channels, FH, FW, DISJOINT);  \
  } while (0)

/*
 * Gradient of max pooling. Each pooling window sends its output gradient to the position of its
 * maximum: the FIRST maximum in row-major window order (a strictly greater value replaces the
 * current best), exactly as tfjs's cpu backend (maxPoolPositions) picks it; every other pixel of
 * dx is 0. Windows that overlap (stride < filter) accumulate in window order, pixels outside the
 * input (padding) are skipped, and a window without a valid pixel (or whose values are all NaN
 * or -Infinity) contributes nothing.
 *
 * Channels go four at a time with v128 (a scalar loop takes channels % 4). Disjoint windows
 * (stride >= filter) write every pixel they cover, so only the pixels no window covers are
 * zeroed first; overlapping windows add into a zeroed dx. Full 2x2 and 3x3 windows get unrolled
 * code.
 */
void EXPORT(maxpool_grad)(const float *x, const float *dy, float *dx, int batch, int inH, int inW,
                          int channels, int outH, int outW, int filterH, int filterW, int strideH,
                          int strideW, int padTop, int padLeft) {
  const unsigned rowStride = (unsigned)inW * (unsigned)channels;
  const unsigned imageStride = (unsigned)inH * rowStride;
  const unsigned total = (unsigned)batch * imageStride;
  const unsigned vecChannels = (unsigned)channels & ~3u;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  const int disjoint = strideH >= filterH && strideW >= filterW;

  if (!disjoint) {
    unsigned i = 0;
    for (; i + 4 <= total; i += 4) wasm_v128_store(dx + i, zero);
    for (; i < total; i++) dx[i] = 0.0f;
  } else {
    /* Input row h is in window oh = (h + padTop) / strideH at offset (h + padTop) % strideH
     * (no other window, as stride >= filter); it is covered when oh < outH and the offset is
     * < filterH (padTop >= 0). Same for columns. Counters instead of per-pixel divisions. */
    const int oh0 = padTop / strideH, rh0 = padTop - oh0 * strideH;
    const int ow0 = padLeft / strideW, rw0 = padLeft - ow0 * strideW;
    float *o = dx;
    for (int n = 0; n < batch; n++) {
      for (int h = 0, oh = oh0, rh = rh0; h < inH; h++) {
        const int rowCovered = oh < outH && rh < filterH;
        for (int w = 0, ow = ow0, rw = rw0; w < inW; w++, o += channels) {
          const int pixelCovered = rowCovered && ow < outW && rw < filterW;
          if (++rw == strideW) rw = 0, ow++;
          if (pixelCovered) continue;
          unsigned c = 0;
          for (; c < vecChannels; c += 4) wasm_v128_store(o + c, zero);
          for (; c < (unsigned)channels; c++) o[c] = 0.0f;
        }
        if (++rh == strideH) rh = 0, oh++;
      }
    }
  }

  const float *g = dy;
  for (int n = 0; n < batch; n++) {
    const unsigned imageBase = (unsigned)n * imageStride;
    for (int oh = 0; oh < outH; oh++) {
      const int h0 = oh * strideH - padTop;
      const int hBegin = h0 < 0 ? 0 : h0;
      const int hEnd = h0 + filterH < inH ? h0 + filterH : inH;
      for (int ow = 0; ow < outW; ow++, g += channels) {
        const int w0 = ow * strideW - padLeft;
        const int wBegin = w0 < 0 ? 0 : w0;
        const int wEnd = w0 + filterW < inW ? w0 + filterW : inW;
        const int hN = hEnd - hBegin;
        const int wN = wEnd - wBegin;
        if (hN <= 0 || wN <= 0) continue;
        const unsigned base = imageBase + (unsigned)hBegin * rowStride + (unsigned)wBegin * (unsigned)channels;
        if (hN == 2 && wN == 2) {
          if (disjoint) WINDOW(2, 2, 1);
          else WINDOW(2, 2, 0);
        } else if (hN == 3 && wN == 3) {
          if (disjoint) WINDOW(3, 3, 1);
          else WINDOW(3, 3, 0);
        } else {
          if (disjoint) WINDOW(hN, wN, 1);
          else WINDOW(hN, wN, 0);
        }
      }
    }
  }
}

#define SUM_BLOCK 256

/* Adds the float32 block sums in `s` into float64 accumulators lo (lanes 0-1) and hi (2-3). */
#define FOLD(s, lo, hi)                                                                  \
  do {                                                                                   \
    lo = wasm_f64x2_add(lo, wasm_f64x2_promote_low_f32x4(s));                            \
    hi = wasm_f64x2_add(hi, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(s, s, 2, 3, 0, 1))); \
  } while (0)

#define NARROW(lo, hi) \
  wasm_i32x4_shuffle(wasm_f32x4_demote_f64x2_zero(lo), wasm_f32x4_demote_f64x2_zero(hi), 0, 1, 4, 5)

/*
 * out[c] = sum over r of x[r * cols + c], for a [rows, cols] matrix (a sum over leading axes).
 * Rows are added in float32 blocks of SUM_BLOCK rows, and the block sums in float64, so the
 * error stays that of a 256-term float32 sum however many rows there are. Columns go 16 at a
 * time (4 f32x4 block sums, 8 f64x2 totals: all in registers), then 4 at a time, then singly.
 */
void EXPORT(sum_leading)(const float *x, float *out, int rows, int cols) {
  const unsigned stride = (unsigned)cols;
  unsigned c = 0;
  for (; c + 16 <= stride; c += 16) {
    v128_t t0 = wasm_f64x2_splat(0.0), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
    for (int r0 = 0; r0 < rows; r0 += SUM_BLOCK) {
      const int r1 = rows - r0 < SUM_BLOCK ? rows : r0 + SUM_BLOCK;
      v128_t s0 = wasm_f32x4_splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
      const float *p = x + (unsigned)r0 * stride + c;
      for (int r = r0; r < r1; r++, p += stride) {
        s0 = wasm_f32x4_add(s0, wasm_v128_load(p));
        s1 = wasm_f32x4_add(s1, wasm_v128_load(p + 4));
        s2 = wasm_f32x4_add(s2, wasm_v128_load(p + 8));
        s3 = wasm_f32x4_add(s3, wasm_v128_load(p + 12));
      }
      FOLD(s0, t0, t1);
      FOLD(s1, t2, t3);
      FOLD(s2, t4, t5);
      FOLD(s3, t6, t7);
    }
    wasm_v128_store(out + c, NARROW(t0, t1));
    wasm_v128_store(out + c + 4, NARROW(t2, t3));
    wasm_v128_store(out + c + 8, NARROW(t4, t5));
    wasm_v128_store(out + c + 12, NARROW(t6, t7));
  }
  for (; c + 4 <= stride; c += 4) {
    v128_t t0 = wasm_f64x2_splat(0.0), t1 = t0;
    for (int r0 = 0; r0 < rows; r0 += SUM_BLOCK) {
      const int r1 = rows - r0 < SUM_BLOCK ? rows : r0 + SUM_BLOCK;
      v128_t s0 = wasm_f32x4_splat(0.0f);
      const float *p = x + (unsigned)r0 * stride + c;
      for (int r = r0; r < r1; r++, p += stride) s0 = wasm_f32x4_add(s0, wasm_v128_load(p));
      FOLD(s0, t0, t1);
    }
    wasm_v128_store(out + c, NARROW(t0, t1));
  }
  for (; c < stride; c++) {
    double t = 0.0;
    for (int r0 = 0; r0 < rows; r0 += SUM_BLOCK) {
      const int r1 = rows - r0 < SUM_BLOCK ? rows : r0 + SUM_BLOCK;
      float s = 0.0f;
      const float *p = x + (unsigned)r0 * stride + c;
      for (int r = r0; r < r1; r++, p += stride) s += *p;
      t += (double)s;
    }
    out[c] = (float)t;
  }
}

/*
 * Input gradient of a convolution, assembled from the products of the output gradient with the
 * filter: cols[n, oh, ow, (kh, kw, c)] = sum over k of dy[n, oh, ow, k] * filter[kh, kw, c, k]
 * is added into dx[n, h, w, c] at h = oh*strideH + kh*dilationH - padTop and
 * w = ow*strideW + kw*dilationW - padLeft; positions in the padding are dropped ("col2im").
 * dx is overwritten. Channels go four at a time with v128, the remainder singly.
 */
void EXPORT(col2im)(const float *cols, float *dx, int batch, int inH, int inW, int channels, int outH,
                    int outW, int filterH, int filterW, int strideH, int strideW, int dilationH,
                    int dilationW, int padTop, int padLeft) {
  const unsigned total = (unsigned)batch * (unsigned)inH * (unsigned)inW * (unsigned)channels;
  const unsigned vecChannels = (unsigned)channels & ~3u;
  {
    const v128_t zero = wasm_f32x4_splat(0.0f);
    unsigned i = 0;
    for (; i + 4 <= total; i += 4) wasm_v128_store(dx + i, zero);
    for (; i < total; i++) dx[i] = 0.0f;
  }
  const float *src = cols;
  for (int n = 0; n < batch; n++) {
    float *image = dx + (unsigned)n * (unsigned)inH * (unsigned)inW * (unsigned)channels;
    for (int oh = 0; oh < outH; oh++) {
      for (int ow = 0; ow < outW; ow++) {
        for (int kh = 0; kh < filterH; kh++) {
          const int h = oh * strideH + kh * dilationH - padTop;
          if (h < 0 || h >= inH) {
            src += (unsigned)filterW * (unsigned)channels;
            continue;
          }
          for (int kw = 0; kw < filterW; kw++, src += channels) {
            const int w = ow * strideW + kw * dilationW - padLeft;
            if (w < 0 || w >= inW) continue;
            float *dst = image + ((unsigned)h * (unsigned)inW + (unsigned)w) * (unsigned)channels;
            unsigned c = 0;
            for (; c < vecChannels; c += 4) {
              wasm_v128_store(dst + c, wasm_f32x4_add(wasm_v128_load(dst + c), wasm_v128_load(src + c)));
            }
            for (; c < (unsigned)channels; c++) dst[c] += src[c];
          }
        }
      }
    }
  }
}

/*
 * Patches of a convolution's input ("im2col"), P = batch*outH*outW positions by K = filterH*
 * filterW*channels values, value (kh, kw, c) of position (n, oh, ow) being x[n, h, w, c] with
 * h = oh*strideH + kh*dilationH - padTop, w = ow*strideW + kw*dilationW - padLeft, or 0 in the
 * padding. transposed == 0 writes out[p*K + k] ([P, K]); transposed != 0 writes out[k*P + p]
 * ([K, P]), walking one input row at a time so that reads stay in cache and each channel's
 * writes are contiguous. Every element of out is written.
 */
void EXPORT(im2col)(const float *x, float *out, int transposed, int batch, int inH, int inW, int channels,
                    int outH, int outW, int filterH, int filterW, int strideH, int strideW, int dilationH,
                    int dilationW, int padTop, int padLeft) {
  const unsigned C = (unsigned)channels;
  const unsigned K = (unsigned)filterH * (unsigned)filterW * C;
  const unsigned P = (unsigned)batch * (unsigned)outH * (unsigned)outW;
  for (int n = 0; n < batch; n++) {
    for (int oh = 0; oh < outH; oh++) {
      const unsigned p0 = ((unsigned)n * (unsigned)outH + (unsigned)oh) * (unsigned)outW;
      for (int kh = 0; kh < filterH; kh++) {
        const int h = oh * strideH + kh * dilationH - padTop;
        const int rowValid = h >= 0 && h < inH;
        const float *row = x + ((unsigned)n * (unsigned)inH + (unsigned)(rowValid ? h : 0)) * (unsigned)inW * C;
        for (int kw = 0; kw < filterW; kw++) {
          const unsigned k0 = ((unsigned)kh * (unsigned)filterW + (unsigned)kw) * C;
          if (transposed) {
            for (unsigned c = 0; c < C; c++) {
              float *dst = out + (k0 + c) * P + p0;
              for (int ow = 0; ow < outW; ow++) {
                const int w = ow * strideW + kw * dilationW - padLeft;
                dst[ow] = rowValid && w >= 0 && w < inW ? row[(unsigned)w * C + c] : 0.0f;
              }
            }
          } else {
            for (int ow = 0; ow < outW; ow++) {
              const int w = ow * strideW + kw * dilationW - padLeft;
              float *dst = out + (p0 + (unsigned)ow) * K + k0;
              if (rowValid && w >= 0 && w < inW) {
                const float *src = row + (unsigned)w * C;
                unsigned c = 0;
                for (; c + 4 <= C; c += 4) wasm_v128_store(dst + c, wasm_v128_load(src + c));
                for (; c < C; c++) dst[c] = src[c];
              } else {
                for (unsigned c = 0; c < C; c++) dst[c] = 0.0f;
              }
            }
          }
        }
      }
    }
  }
}
