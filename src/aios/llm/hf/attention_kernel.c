/* Decode attention on a CPU: one new token for each of n cache rows, in one pass over each row's keys and values.

   Compiled when a model loads (see attention_kernel.py) with HEAD_DIM and GROUP (query heads per key head) fixed,
   so that a query's heads and their sums stay in vector registers. For each (row, key head) it writes the new
   token's key and value at the row's offset, then attends over positions 0..offset: the scores of the GROUP
   query heads in one read of the keys, their softmax, and the weighted values in one read of the values. The
   work is split over torch's OpenMP threads by (row, key head); a row's result depends only on that row, never
   on the others in the batch, so it is the same alone and batched.

   Why not torch: there this is a matrix product per (row, key head) of GROUP x HEAD_DIM by HEAD_DIM x span, a
   softmax and another product, each call paying a small-matrix overhead, and the keys read again for the
   values: 1.8-2.6x slower at 16-32 rows, a whole decode step 1.10-1.16x slower (BENCHMARKS.md, "Engine
   speed against its targets (CPU)"). */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define CHUNKS (HEAD_DIM / LANES)
#define LINE 64

typedef float vec __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));

static inline float sum_lanes(vec x) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += x[i];
    return s;
}

/* tokens[i], rows[i], offsets[i]: the i-th new token's index in q/k/v, its cache row, and where in the row it
   goes. q: [tokens, heads, HEAD_DIM] with token stride q_stride (k, v alike with kv_heads). keys, values: one
   layer, [rows, kv_heads, capacity, HEAD_DIM] with the given row and head strides. The result of token i goes
   to out[written[i]] ([*, heads, HEAD_DIM], contiguous), and, when lse is not NULL, each head's log-sum-exp of
   its scores to lse[written[i]] ([*, heads]), for merging with attention over other keys. scratch holds
   threads x GROUP x stride floats for the scores, stride being at least the most positions a row attends to
   and a multiple of LANES (every head's scores then start equally aligned, whatever the batch). */
void decode_attention(int64_t n, const int64_t *tokens, const int64_t *rows, const int64_t *offsets,
                      const int64_t *written, const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                      const float *v, int64_t v_stride, float *keys, float *values, int64_t row_stride,
                      int64_t head_stride, int64_t kv_heads, int64_t stride, float *out, float *lse,
                      float *scratch, int threads) {
    const int64_t heads = kv_heads * GROUP;
    const float scale = 1.0f / sqrtf((float)HEAD_DIM);
    #pragma omp parallel num_threads(threads)
    {
        float *scores = scratch + omp_get_thread_num() * GROUP * stride;
        #pragma omp for schedule(static)
        for (int64_t item = 0; item < n * kv_heads; item++) {
            const int64_t i = item / kv_heads, h = item % kv_heads, token = tokens[i], span = offsets[i] + 1;
            float *K = keys + rows[i] * row_stride + h * head_stride;
            float *V = values + rows[i] * row_stride + h * head_stride;
            memcpy(K + offsets[i] * HEAD_DIM, k + token * k_stride + h * HEAD_DIM, sizeof(float) * HEAD_DIM);
            memcpy(V + offsets[i] * HEAD_DIM, v + token * v_stride + h * HEAD_DIM, sizeof(float) * HEAD_DIM);

            const vec *Q = (const vec *)(q + token * q_stride + h * GROUP * HEAD_DIM);
            vec query[GROUP][CHUNKS];
            for (int g = 0; g < GROUP; g++)
                for (int c = 0; c < CHUNKS; c++) query[g][c] = Q[g * CHUNKS + c] * scale;
            float top[GROUP];
            for (int64_t p = 0; p < span; p++) {
                const vec *key = (const vec *)(K + p * HEAD_DIM);
                /* The next keys, and this position's value (read after all the scores), are fetched ahead:
                   the rows are far larger than the cache and read once a step. */
                for (int line = 0; line < HEAD_DIM * (int)sizeof(float); line += LINE) {
                    __builtin_prefetch((const char *)(K + (p + 16) * HEAD_DIM) + line);
                    __builtin_prefetch((const char *)(V + p * HEAD_DIM) + line);
                }
                for (int g = 0; g < GROUP; g++) {
                    vec acc = query[g][0] * key[0];
                    for (int c = 1; c < CHUNKS; c++) acc += query[g][c] * key[c];
                    const float s = sum_lanes(acc);
                    scores[g * stride + p] = s;
                    top[g] = (p == 0 || s > top[g]) ? s : top[g];
                }
            }
            float inverse[GROUP];
            for (int g = 0; g < GROUP; g++) {
                float *S = scores + g * stride, total = 0.0f;
                const float m = top[g];
                #pragma omp simd reduction(+:total)
                for (int64_t p = 0; p < span; p++) {
                    S[p] = expf(S[p] - m);
                    total += S[p];
                }
                inverse[g] = 1.0f / total;
                if (lse) lse[written[i] * heads + h * GROUP + g] = m + logf(total);
            }
            vec acc[GROUP][CHUNKS];
            memset(acc, 0, sizeof(acc));
            for (int64_t p = 0; p < span; p++) {
                const vec *value = (const vec *)(V + p * HEAD_DIM);
                for (int g = 0; g < GROUP; g++) {
                    const float w = scores[g * stride + p];
                    for (int c = 0; c < CHUNKS; c++) acc[g][c] += w * value[c];
                }
            }
            vec *O = (vec *)(out + written[i] * heads * HEAD_DIM + h * GROUP * HEAD_DIM);
            for (int g = 0; g < GROUP; g++)
                for (int c = 0; c < CHUNKS; c++) O[g * CHUNKS + c] = acc[g][c] * inverse[g];
        }
    }
}
