// The machine's peak f32 FLOP/s, measured: independent fused multiply-adds on the widest vectors
// the compiler targets (-march=native: AVX-512 or AVX2), 12 chains per thread so the FMA units
// never wait on a result, on 1 and on every thread. The ceiling `bench matmul-cpu` is read
// against (issue 13: "a matmul at 70% of peak").
//
//   cc -O3 -march=native -fopenmp scripts/bench/peak_flops.c -o /tmp/peak && /tmp/peak
// (-O3: at -O2 gcc keeps the chains in memory and measures the stores instead).
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define SUM(v) _mm512_reduce_add_ps(v)
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float SUM(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

#define CHAINS 12

// `iters` rounds of CHAINS independent FMAs; returns a value that depends on all of them.
static float run(long iters, float seed) {
    vec acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = SET1(seed + c);
    const vec a = SET1(0.999999f), b = SET1(1e-7f);
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = FMA(acc[c], a, b);
    vec s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = ADD(s, acc[c]);
    return SUM(s);
}

static double gflops(int threads, long iters) {
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        float sink = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        sink += run(iters, (float)omp_get_thread_num());
        double s = omp_get_wtime() - t0;
        double g = 2.0 * LANES * CHAINS * (double)iters * threads / s / 1e9;
        if (g > best) best = g;
        if (sink == 12345.0f) printf(" ");  // keeps the work
    }
    return best;
}

int main(void) {
    const long iters = 50000000;
    int all = omp_get_max_threads();
    printf("{\"bench\": \"peak-flops\", \"lanes\": %d, \"gflops_1_thread\": %.1f, \"threads\": %d, \"gflops_all_threads\": %.1f}\n",
           LANES, gflops(1, iters), all, gflops(all, iters));
    return 0;
}
