/* The element-wise work of a Llama-family layer on a CPU, each in one C call: the residual add with the RMS norm
   after it, the rotary embedding of queries and keys, and SwiGLU's gate.

   Why not torch: there each is several operations (an RMS norm alone is about ten: copies, a power, a mean, an
   add, a reciprocal square root, products), each paying its dispatch with the caches cold from the matrix
   product before it. Timed inside a decode step of 16 rows, the time between the products and attention (these
   operations, mostly) was 10.8 of 42 ms, attention 6.6 ms (BENCHMARKS.md, "Engine speed against its targets
   (CPU)").

   Each row is computed on its own by the same operations in the same order, whatever its place in the batch:
   every element goes through the same vector code, LANES floats at a time from the row's start (the last few
   loaded into a vector padded with zeros), never through a compiler's own vectorizing, which may take some
   elements apart from the others (to reach an aligned address, or by a check of the addresses at run time) and
   compute them another way. So a row's result never depends on the rows beside it. A prompt's many rows are
   split over torch's OpenMP threads; a decode step's few stay on the calling thread.

   Compiled with -ffast-math (for glibc's vector expf): the norm's reciprocal square root is then the CPU's
   approximation refined by a Newton step, the same for every row. */

#include <math.h>
#include <omp.h>
#include <stdint.h>

#define LANES 16
#define PARALLEL_ROWS 64 /* fewer rows are done on the calling thread: waking the others would cost more */

/* LANES floats at any 4-byte-aligned address. */
typedef float vec __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));

/* How many of the elements left go in the next vector. */
static inline int64_t upto(int64_t left) { return left < LANES ? left : LANES; }

/* n (at most LANES) floats from p, the lanes past them zero. */
static inline vec load(const float *p, int64_t n) {
    if (n == LANES) return *(const vec *)p;
    vec v = {0};
    for (int64_t i = 0; i < n; i++) v[i] = p[i];
    return v;
}

static inline void store(float *p, vec v, int64_t n) {
    if (n == LANES) {
        *(vec *)p = v;
        return;
    }
    for (int64_t i = 0; i < n; i++) p[i] = v[i];
}

static inline float sum_lanes(vec x) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += x[i];
    return s;
}

/* x: [M, D]; y: [M, D] or NULL; weight: [D]; out: [M, D]. x += y (in place), then out = x's RMS norm times
   weight. */
void add_rms_norm(int64_t M, int64_t D, float *x, const float *y, const float *weight, float eps, float *out,
                  int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        float *row = x + r * D, *normed = out + r * D;
        vec squares = {0};
        for (int64_t i = 0, n; i < D; i += n) {
            n = upto(D - i);
            vec v = load(row + i, n);
            if (y) {
                v += load(y + r * D + i, n);
                store(row + i, v, n);
            }
            squares += v * v;
        }
        const float scale = 1.0f / sqrtf(sum_lanes(squares) / (float)D + eps);
        for (int64_t i = 0, n; i < D; i += n) {
            n = upto(D - i);
            store(normed + i, load(row + i, n) * scale * load(weight + i, n), n);
        }
    }
}

/* qkv: [M, stride], its first `heads` heads of D floats (the queries, then the keys) rotated in place by their
   token's cos and sin ([M, D]): a head's first half x1 and second half x2 become x1 cos - x2 sin and
   x2 cos + x1 sin. */
void rotate(int64_t M, int64_t stride, int64_t heads, int64_t D, float *qkv, const float *cos, const float *sin,
            int threads) {
    const int64_t half = D / 2;
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        const float *c = cos + r * D, *s = sin + r * D;
        for (int64_t h = 0; h < heads; h++) {
            float *x = qkv + r * stride + h * D;
            for (int64_t i = 0, n; i < half; i += n) {
                n = upto(half - i);
                const vec x1 = load(x + i, n), x2 = load(x + half + i, n);
                store(x + i, x1 * load(c + i, n) - x2 * load(s + i, n), n);
                store(x + half + i, x2 * load(c + half + i, n) + x1 * load(s + half + i, n), n);
            }
        }
    }
}

/* gate_up: [M, 2 I], each row's gate then its up projection; out: [M, I] = silu(gate) * up. */
void gate(int64_t M, int64_t I, const float *gate_up, float *out, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static) if (M >= PARALLEL_ROWS)
    for (int64_t r = 0; r < M; r++) {
        const float *g = gate_up + r * 2 * I, *u = g + I;
        for (int64_t i = 0, n; i < I; i += n) {
            n = upto(I - i);
            const vec v = load(g + i, n);
            vec e;
            #pragma omp simd
            for (int l = 0; l < LANES; l++) e[l] = expf(-v[l]);
            store(out + r * I + i, v / (1.0f + e) * load(u + i, n), n);
        }
    }
}
