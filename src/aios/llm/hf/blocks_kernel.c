/* y = x @ W.T on a CPU, for weights held as GGUF-style blocks that restore every fp32 weight exactly.

   Each weight is q * d + m, with d and m one pair per block of GROUP inputs of one output (Q4_1: q in 0..15, 4
   bits; Q8_0: q in -127..127, 8 bits, m = 0). d is a half-precision value, so q * d is exact in float and one
   fused multiply-add gives the weight bit for bit (blocks.py checks this for every weight before choosing it).
   The products are then those of the fp32 model, with 3/16 (4 bits) or 5/16 (8 bits) of its bytes read from
   memory: a decode step, which reads every weight for a few rows, is bound by those bytes.

   Layout: outputs in panels of NR = 32. For panel p, the GROUP x NR weights of input block g are bytes
   q + (p * K + g * GROUP) * NR * BITS / 8, row by input (4 bits: byte j holds output j in its low nibble and
   output j + 16 in its high one); their d and m are scales[((p * groups + g) * 2 + 0 or 1) * NR + j].

   Every output's sum runs over its inputs in order, one fused multiply-add at a time within a block, and the
   blocks' sums are added in order. That order is the same whatever the number of rows and however the panels
   are split over threads, so a row's result never depends on the rows beside it. It is compiled with
   -ffp-contract=off, so that no multiply and add is fused in one inlined copy and not in another. Summing per
   block keeps the rounding error below a single running sum's (measured on the embedded model's shapes: below
   MKL's too). */

#include <omp.h>
#include <stdint.h>

/* The kernel is written for AVX-512 (vectors of 16 floats, 32 registers) and for AVX2 with FMA (vectors of 8,
   16 registers: fewer rows a pass). The two give the same bits: the same fused multiply-adds in the same order.
   For other targets it is not built and the runner keeps torch's fp32 products (this same algorithm in generic
   vectors, built for AVX2, made a decode step 0.46-0.66x torch's: its sums spilled from the registers). */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define BUILT 1
#else
#define BUILT 0
#endif

/* Whether this build holds block_matmul. */
int block_kernel_built(void) { return BUILT; }

#if BUILT
#include <immintrin.h>

#define NR 32
#define GROUP 32
#ifdef __AVX512F__
#define LANES 16
#define MR 12 /* rows per pass: MR x NV accumulators and the weights' NV vectors fit the 32 vector registers */
#define PR MR /* a prompt's passes: the same, over the whole panel */
#define PV NV
#else
#define LANES 8
#define MR 2 /* AVX2's 16 registers: 2 x 4 accumulators, 4 weight vectors, a broadcast (3 rows: no faster) */
/* A prompt's passes take 6 rows over half a panel (BLAS's AVX2 shape: 6 x 2 accumulators, 2 weight vectors, a
   broadcast): 2 rows over the whole panel read it from L2 for every 8 multiply-adds. 1.15-1.17x faster at 64-512
   rows, as fast as torch's fp32 (MKL's AVX2). */
#define PR 6
#define PV (NV / 2) /* vectors in a row of a prompt's pass */
#endif
#define NV (NR / LANES) /* vectors in a row of a panel */
/* Up to this many rows, a block is restored into L1 (beyond, a prompt's rows, into L2); measured on both builds
   (AVX2: 1.13-1.29x at 12-48 rows against 8). */
#define L1_ROWS 48
#define LINE 64

typedef float vec __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
typedef int32_t ivec __attribute__((vector_size(LANES * sizeof(int32_t)), aligned(sizeof(int32_t))));

#ifdef __AVX512F__
/* A fused multiply-add, lane by lane: one rounding. */
static inline vec fmadd(vec a, vec b, vec c) { return (vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }

static inline vec broadcast(float a) { return (vec)_mm512_set1_ps(a); }

/* LANES bytes widened to LANES integers. */
static inline ivec widen_u8(const uint8_t *bytes) {
    return (ivec)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)bytes));
}

static inline ivec widen_i8(const int8_t *bytes) {
    return (ivec)_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)bytes));
}
#else
static inline vec fmadd(vec a, vec b, vec c) { return (vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }

static inline vec broadcast(float a) { return (vec)_mm256_set1_ps(a); }

static inline ivec widen_u8(const uint8_t *bytes) {
    return (ivec)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
}

static inline ivec widen_i8(const int8_t *bytes) {
    return (ivec)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
}
#endif

static inline vec to_float(ivec v) { return __builtin_convertvector(v, vec); }

/* One input block of one panel restored into w: w[k * NR + j] for k < GROUP, j < NR. */
static void restore(int bits, const uint8_t *q, const float *scales, float *w) {
    vec d[NV], m[NV];
    for (int v = 0; v < NV; v++)
        d[v] = *(const vec *)(scales + v * LANES), m[v] = *(const vec *)(scales + NR + v * LANES);
    for (int k = 0; k < GROUP; k++) {
        vec q_k[NV];
        if (bits == 4) /* byte j: output j in its low nibble, output j + NR / 2 in its high one */
            for (int v = 0; v < NV / 2; v++) {
                const ivec packed = widen_u8(q + k * NR / 2 + v * LANES);
                q_k[v] = to_float(packed & 15), q_k[v + NV / 2] = to_float(packed >> 4);
            }
        else
            for (int v = 0; v < NV; v++) q_k[v] = to_float(widen_i8((const int8_t *)q + k * NR + v * LANES));
        for (int v = 0; v < NV; v++) *(vec *)(w + k * NR + v * LANES) = fmadd(q_k[v], d[v], m[v]);
    }
}

/* rows (<= MR, or PR) rows of x, inputs k0 .. k0 + GROUP - 1, times the first `vectors` vectors of each row of a
   restored block w (GROUP rows NR floats apart): added to y (or written to it, for the first block). Inlined for
   each constant number of rows and vectors: the accumulators stay in registers. */
static inline __attribute__((always_inline)) void multiply(int rows, int vectors, const float *x, int64_t ldx,
                                                          int64_t k0, const float *w, float *y, int64_t ldy) {
    vec acc[MR > PR ? MR : PR][NV];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vectors; v++) acc[r][v] = (vec){0};
    #pragma GCC unroll 4
    for (int k = 0; k < GROUP; k++) {
        vec b[NV];
        for (int v = 0; v < vectors; v++) b[v] = *(const vec *)(w + k * NR + v * LANES);
        for (int r = 0; r < rows; r++) {
            const vec a = broadcast(x[r * ldx + k0 + k]);
            for (int v = 0; v < vectors; v++) acc[r][v] = fmadd(a, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++) {
        vec *out = (vec *)(y + r * ldy);
        for (int v = 0; v < vectors; v++) out[v] = k0 ? out[v] + acc[r][v] : acc[r][v];
    }
}

#define ROWS(n, vectors) case n: multiply(n, vectors, x, K, k0, w, out, N); break;

/* multiply() for 1 to MR rows, over the whole panel. */
static void pass(int64_t rows, const float *x, int64_t K, int64_t k0, const float *w, float *out, int64_t N) {
    _Static_assert(MR == 2 || MR == 12, "pass() takes 1 to MR rows");
    switch (rows) {
        ROWS(1, NV) ROWS(2, NV)
#if MR > 2
        ROWS(3, NV) ROWS(4, NV) ROWS(5, NV) ROWS(6, NV) ROWS(7, NV) ROWS(8, NV) ROWS(9, NV) ROWS(10, NV)
        ROWS(11, NV) ROWS(12, NV)
#endif
        default: __builtin_trap();
    }
}

#if PR == MR
#define prompt_pass pass
#else
/* multiply() for 1 to PR rows, over PV vectors of the panel (w and out start at the first). */
static void prompt_pass(int64_t rows, const float *x, int64_t K, int64_t k0, const float *w, float *out,
                        int64_t N) {
    _Static_assert(PR == 6, "prompt_pass() takes 1 to PR rows");
    switch (rows) {
        ROWS(1, PV) ROWS(2, PV) ROWS(3, PV) ROWS(4, PV) ROWS(5, PV) ROWS(6, PV)
        default: __builtin_trap();
    }
}
#endif

/* Block g of panel p + 1, fetched into the cache while panel p's block g is computed: with few rows a panel is
   computed sooner than memory answers, and the hardware's prefetcher is slow to follow the stream into the next
   panel (measured: a decode step's products 1.2x faster at 1-4 rows, the same at 16). The last panel of a
   thread's share fetches the next thread's first: wasted, harmless. */
static inline void fetch_ahead(const uint8_t *q, const float *scales, int64_t block_bytes) {
    for (int64_t line = 0; line < block_bytes; line += LINE) __builtin_prefetch((const char *)q + line);
    for (int64_t line = 0; line < 2 * NR * (int64_t)sizeof(float); line += LINE)
        __builtin_prefetch((const char *)scales + line);
}

/* x: [M, K] contiguous; y: [M, N] contiguous; N a multiple of NR, K of GROUP. bits: 4 or 8. scratch: threads x
   K x NR floats, 64-byte aligned (one restored panel per thread; used with more than L1_ROWS rows).

   Up to L1_ROWS rows (decode steps), each input block is restored into a buffer in L1 just before the passes
   over it; the rows are split into passes as equal as possible (with AVX-512, 12 + 4 rows would leave the FMA
   units idle in the second pass; 8 + 8 keeps them busy: 1.15x at 16 rows). With more, a panel is restored whole
   into scratch (in L2) first, and each PR rows pass over it in turn (1.2x faster than blocks in L1 at 256
   rows). Either way every output's sum is the same sequence of operations. */
void block_matmul(int64_t M, int64_t N, int64_t K, const float *x, const uint8_t *q, const float *scales, int bits,
                  float *y, float *scratch, int threads) {
    const int64_t panels = N / NR, groups = K / GROUP, block_bytes = GROUP * NR * bits / 8;
    const int64_t passes = (M + MR - 1) / MR;
    #pragma omp parallel num_threads(threads)
    {
        float block[GROUP * NR] __attribute__((aligned(64)));
        float *panel = scratch + omp_get_thread_num() * K * NR;
        #pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++) {
            const uint8_t *qp = q + p * groups * block_bytes;
            const float *sp = scales + p * groups * 2 * NR;
            float *out = y + p * NR;
            if (M <= L1_ROWS) {
                for (int64_t g = 0; g < groups; g++) {
                    if (p + 1 < panels) fetch_ahead(qp + (groups + g) * block_bytes, sp + (groups + g) * 2 * NR,
                                                    block_bytes);
                    restore(bits, qp + g * block_bytes, sp + g * 2 * NR, block);
                    /* The rows left over the passes left, rounded down: from 1 to MR, as M <= passes * MR. */
                    for (int64_t i = 0, m = 0, rows; i < passes; i++, m += rows) {
                        rows = (M - m) / (passes - i);
                        pass(rows, x + m * K, K, g * GROUP, block, out + m * N, N);
                    }
                }
                continue;
            }
            for (int64_t g = 0; g < groups; g++)
                restore(bits, qp + g * block_bytes, sp + g * 2 * NR, panel + g * GROUP * NR);
            for (int64_t m = 0; m < M; m += PR)
                for (int64_t k0 = 0; k0 < K; k0 += GROUP)
                    for (int64_t v = 0; v < NV; v += PV)
                        prompt_pass(M - m < PR ? M - m : PR, x + m * K, K, k0, panel + k0 * NR + v * LANES,
                                    out + m * N + v * LANES, N);
        }
    }
}
#endif
