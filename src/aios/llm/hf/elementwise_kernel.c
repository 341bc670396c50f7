/* The element-wise work of a Llama-family layer on a CPU, each in one C call: the residual add with the RMS norm
   after it, the rotary embedding of queries and keys, and SwiGLU's gate.

   Why not torch: there each is several operations (an RMS norm alone is about ten: copies, a power, a mean, an
   add, a reciprocal square root, products), each paying its dispatch with the caches cold from the matrix
   product before it: in a decode step of 16 rows they took longer than attention (BENCHMARKS.md, "Engine speed
   against its targets (CPU)").

   Each row is computed on its own by the same operations in the same order, whatever its place in the batch: the
   loops run over explicit vectors of LANES floats from the row's start (a compiler's own vectorizing may peel a
   few elements to reach an aligned address, and compute them otherwise), and the last D % LANES elements one by
   one. So a row's result never depends on the rows beside it. A prompt's many rows are split over torch's OpenMP
   threads; a decode step's few stay on the calling thread. */

#include <math.h>
#include <omp.h>
#include <stdint.h>

#define LANES 16
#define PARALLEL_ROWS 64 /* fewer rows are done on the calling thread: waking the others would cost more */

/* LANES floats at any 4-byte-aligned address. */
typedef float vec __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));

static inline float sum_lanes(vec x) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += x[i];
    return s;
}

/* x: [M, D]; y: [M, D] or NULL; weight: [D]; out: [M, D]. x += y (in place), then out = x's RMS norm times
   weight. */
void add_rms_norm(int64_t M, int64_t D, float *x, const float *y, const float *weight, float eps, float *out,
                  int threads) {
    const int64_t body = D - D % LANES;
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        float *row = x + r * D, *normed = out + r * D;
        vec squares = {0};
        float tail = 0.0f;
        for (int64_t i = 0; i < body; i += LANES) {
            vec *v = (vec *)(row + i);
            if (y) *v += *(const vec *)(y + r * D + i);
            squares += *v * *v;
        }
        for (int64_t i = body; i < D; i++) {
            if (y) row[i] += y[r * D + i];
            tail += row[i] * row[i];
        }
        const float scale = 1.0f / sqrtf((sum_lanes(squares) + tail) / (float)D + eps);
        for (int64_t i = 0; i < body; i += LANES)
            *(vec *)(normed + i) = *(const vec *)(row + i) * scale * *(const vec *)(weight + i);
        for (int64_t i = body; i < D; i++) normed[i] = row[i] * scale * weight[i];
    }
}

/* x1 cos - x2 sin and x2 cos + x1 sin for n elements of a head's halves (x1 at x, x2 at x + half; c and s the
   cos and sin of the head's position at the same places). */
static inline void turn(float *x, const float *c, const float *s, int64_t half, int64_t from, int64_t n) {
    for (int64_t i = from; i < from + n; i++) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i + half] + x1 * s[i + half];
    }
}

/* qkv: [M, stride], its first `heads` heads of D floats (the queries, then the keys) rotated in place by their
   token's cos and sin ([M, D]): a head's first half x1 and second half x2 become x1 cos - x2 sin and
   x2 cos + x1 sin. */
void rotate(int64_t M, int64_t stride, int64_t heads, int64_t D, float *qkv, const float *cos, const float *sin,
            int threads) {
    const int64_t half = D / 2, body = half - half % LANES;
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        const float *c = cos + r * D, *s = sin + r * D;
        for (int64_t h = 0; h < heads; h++) {
            float *x = qkv + r * stride + h * D;
            for (int64_t i = 0; i < body; i += LANES) {
                vec *x1 = (vec *)(x + i), *x2 = (vec *)(x + half + i);
                const vec a = *x1, b = *x2;
                *x1 = a * *(const vec *)(c + i) - b * *(const vec *)(s + i);
                *x2 = b * *(const vec *)(c + half + i) + a * *(const vec *)(s + half + i);
            }
            turn(x, c, s, half, body, half - body);
        }
    }
}

/* gate_up: [M, 2 I], each row's gate then its up projection; out: [M, I] = silu(gate) * up. */
void gate(int64_t M, int64_t I, const float *gate_up, float *out, int threads) {
    const int64_t body = I - I % LANES;
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        const float *g = gate_up + r * 2 * I, *u = g + I;
        float *o = out + r * I;
        for (int64_t i = 0; i < body; i += LANES) {
            const vec v = *(const vec *)(g + i);
            vec e;
            #pragma omp simd
            for (int l = 0; l < LANES; l++) e[l] = expf(-v[l]);
            *(vec *)(o + i) = v / (1.0f + e) * *(const vec *)(u + i);
        }
        for (int64_t i = body; i < I; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}
