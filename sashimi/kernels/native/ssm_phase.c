/* The state pass of a run of S4 layers stepping one sample (see sashimi/kernels/native/__init__.py).
 *
 * Per layer and batch row b, with the state x (J = 2M rows: M real parts, then M imaginary parts;
 * H channels innermost), the pending input u (H) and the layer's constants:
 *
 *   x   <- x + u * G                                   (the previous step's input, applied lazily)
 *   r_k  = sum_j W_k[j] * x[j]                         (k < nk: reductions down the rows, per channel)
 *   x_m <- Re(a_m z_m) + sum_{e < ne} E_e[m] r_e       (m < M; z_m = x_m + i x_{m+M}, a_m = A_m + i A_{m+M})
 *   x_{m+M} <- Im(a_m z_m) + sum_{e < ne} E_e[m+M] r_e
 *
 * x is overwritten and r is stored in R (nk, H). The (2M, H) arrays (x per batch row, G, W_k, A, E_e)
 * are channel-blocked: (H / C, 2M, C), element (j, h) at ((h / C) 2M + j) C + h % C, so that the rows
 * of a block of C channels are contiguous (C = H is the plain layout). With C = 64 bytes of channels,
 * a block is one 64-byte vector where the compiler targets AVX-512 (four batch rows at a time) and two
 * 32-byte vectors otherwise (two batch rows at a time: AVX2 has half the registers): the reductions
 * stay in registers and each constant loaded serves every row of the group.
 */
#include <stdint.h>

/* vectors of SASHIMI_VB bytes (GCC / Clang vector extensions; unaligned, may alias the scalar arrays) */
#if defined(__AVX512F__)
#define SASHIMI_VB 64
#define SASHIMI_NB 4 /* batch rows per call of a block kernel */
#else
#define SASHIMI_VB 32
#define SASHIMI_NB 2
#endif
#define SASHIMI_VEC(T, V) typedef T V __attribute__((vector_size(SASHIMI_VB), aligned(sizeof(T)), may_alias));
#define SASHIMI_NV (64 / SASHIMI_VB) /* vectors per channel block: C = 64 bytes of channels */

/* NB batch rows of one layer (TAG names the count), one channel block (NV vectors) at a time: pass
 * 1 applies the pending inputs and accumulates the NK reductions down the block's rows, pass 2
 * updates the same rows (in L1) with the accumulated low-rank coefficients. The constants of a row
 * are loaded once for the NB batch rows (into locals: the state stores may alias them as far as the
 * compiler knows). */
#define SASHIMI_BLOCK(T, V, NAME, TAG, NB, NK)                                                             \
    static void NAME##_##TAG##k##NK(int64_t M, int64_t H, int64_t ne, T *x, const T *u, const T *G,        \
                                    const T *W, const T *A, const T *E, T *r)                              \
    {                                                                                                      \
        enum { NV = SASHIMI_NV, L = SASHIMI_VB / sizeof(T), C = 64 / sizeof(T) };                          \
        const int64_t J = 2 * M, S = J * H;                                                                \
        for (int64_t h = 0; h < H; h += C) {                                                               \
            const int64_t base = h * J; /* (h / C) * J * C */                                              \
            V uv[NB][NV], acc[NB][NK][NV];                                                                 \
            for (int b = 0; b < NB; ++b)                                                                   \
                for (int v = 0; v < NV; ++v) {                                                             \
                    uv[b][v] = *(const V *)(u + b * H + h + v * L);                                        \
                    for (int k = 0; k < NK; ++k)                                                           \
                        acc[b][k][v] = (V){0};                                                             \
                }                                                                                          \
            for (int64_t j = 0; j < J; ++j)                                                                \
                for (int v = 0; v < NV; ++v) {                                                             \
                    const int64_t o = base + j * C + v * L;                                                \
                    const V g = *(const V *)(G + o);                                                       \
                    V wv[NK];                                                                              \
                    for (int k = 0; k < NK; ++k)                                                           \
                        wv[k] = *(const V *)(W + k * S + o);                                               \
                    for (int b = 0; b < NB; ++b) {                                                         \
                        V *xp = (V *)(x + b * S + o);                                                      \
                        const V xv = *xp + uv[b][v] * g;                                                   \
                        *xp = xv;                                                                          \
                        for (int k = 0; k < NK; ++k)                                                       \
                            acc[b][k][v] += wv[k] * xv;                                                    \
                    }                                                                                      \
                }                                                                                          \
            for (int b = 0; b < NB; ++b)                                                                   \
                for (int k = 0; k < NK; ++k)                                                               \
                    for (int v = 0; v < NV; ++v)                                                           \
                        *(V *)(r + (b * NK + k) * H + h + v * L) = acc[b][k][v];                           \
            for (int64_t m = 0; m < M; ++m)                                                                \
                for (int v = 0; v < NV; ++v) {                                                             \
                    const int64_t pr = base + m * C + v * L, pi = pr + M * C;                              \
                    const V ar = *(const V *)(A + pr), ai = *(const V *)(A + pi);                          \
                    V er[NK], ei[NK];                                                                      \
                    for (int e = 0; e < NK && e < ne; ++e) {                                               \
                        er[e] = *(const V *)(E + e * S + pr);                                              \
                        ei[e] = *(const V *)(E + e * S + pi);                                              \
                    }                                                                                      \
                    for (int b = 0; b < NB; ++b) {                                                         \
                        V *xr = (V *)(x + b * S + pr), *xi = (V *)(x + b * S + pi);                        \
                        const V vr = *xr, vi = *xi;                                                        \
                        V nr = ar * vr - ai * vi, ni = ai * vr + ar * vi;                                  \
                        for (int e = 0; e < NK && e < ne; ++e) {                                           \
                            nr += er[e] * acc[b][e][v];                                                    \
                            ni += ei[e] * acc[b][e][v];                                                    \
                        }                                                                                  \
                        *xr = nr;                                                                          \
                        *xi = ni;                                                                          \
                    }                                                                                      \
                }                                                                                          \
        }                                                                                                  \
    }

/* Any shape and block width: plain loops, one batch row. */
#define SASHIMI_ROW_ANY(T, NAME)                                                                           \
    static void NAME##_row_any(int64_t M, int64_t H, int64_t C, int64_t ne, int64_t nk, T *x, const T *u,  \
                               const T *G, const T *W, const T *A, const T *E, T *r)                       \
    {                                                                                                      \
        const int64_t J = 2 * M, S = J * H;                                                                \
        for (int64_t h = 0; h < H; ++h) {                                                                  \
            const int64_t base = (h / C) * J * C + h % C;                                                  \
            for (int64_t j = 0; j < J; ++j)                                                                \
                x[base + j * C] += u[h] * G[base + j * C];                                                 \
            for (int64_t k = 0; k < nk; ++k) {                                                             \
                T a = 0;                                                                                   \
                for (int64_t j = 0; j < J; ++j)                                                            \
                    a += W[k * S + base + j * C] * x[base + j * C];                                        \
                r[k * H + h] = a;                                                                          \
            }                                                                                              \
            for (int64_t m = 0; m < M; ++m) {                                                              \
                const int64_t pr = base + m * C, pi = base + (m + M) * C;                                  \
                const T vr = x[pr], vi = x[pi];                                                            \
                T nr = A[pr] * vr - A[pi] * vi, ni = A[pi] * vr + A[pr] * vi;                              \
                for (int64_t e = 0; e < ne; ++e) {                                                         \
                    nr += E[e * S + pr] * r[e * H + h];                                                    \
                    ni += E[e * S + pi] * r[e * H + h];                                                    \
                }                                                                                          \
                x[pr] = nr;                                                                                \
                x[pi] = ni;                                                                                \
            }                                                                                              \
        }                                                                                                  \
    }

#define SASHIMI_DISPATCH(NAME, TAG, nk, ...)                                                               \
    switch (nk) {                                                                                          \
    case 1: NAME##_##TAG##k1(__VA_ARGS__); break;                                                          \
    case 2: NAME##_##TAG##k2(__VA_ARGS__); break;                                                          \
    case 3: NAME##_##TAG##k3(__VA_ARGS__); break;                                                          \
    default: NAME##_##TAG##k4(__VA_ARGS__); break;                                                         \
    }

/* dims per layer: B, M, H, ne, nk, C; ptrs per layer: X, U, G, W, A, E, R */
#define SASHIMI_SSM_PHASE(T, V, NAME)                                                                      \
    SASHIMI_VEC(T, V)                                                                                      \
    SASHIMI_BLOCK(T, V, NAME, group, SASHIMI_NB, 1)                                                        \
    SASHIMI_BLOCK(T, V, NAME, group, SASHIMI_NB, 2)                                                        \
    SASHIMI_BLOCK(T, V, NAME, group, SASHIMI_NB, 3)                                                        \
    SASHIMI_BLOCK(T, V, NAME, group, SASHIMI_NB, 4)                                                        \
    SASHIMI_BLOCK(T, V, NAME, row, 1, 1)                                                                   \
    SASHIMI_BLOCK(T, V, NAME, row, 1, 2)                                                                   \
    SASHIMI_BLOCK(T, V, NAME, row, 1, 3)                                                                   \
    SASHIMI_BLOCK(T, V, NAME, row, 1, 4)                                                                   \
    SASHIMI_ROW_ANY(T, NAME)                                                                               \
    void NAME(int64_t n_layers, const int64_t *dims, T *const *ptrs)                                       \
    {                                                                                                      \
        for (int64_t l = 0; l < n_layers; ++l) {                                                           \
            const int64_t *d = dims + 6 * l;                                                               \
            const int64_t B = d[0], M = d[1], H = d[2], ne = d[3], nk = d[4], C = d[5], S = 2 * M * H;     \
            const int vec = C == (int64_t)(64 / sizeof(T)) && nk >= 1 && nk <= 4;                          \
            T *const X = ptrs[7 * l];                                                                      \
            const T *const U = ptrs[7 * l + 1], *const G = ptrs[7 * l + 2], *const W = ptrs[7 * l + 3];    \
            const T *const A = ptrs[7 * l + 4], *const E = ptrs[7 * l + 5];                                \
            T *const R = ptrs[7 * l + 6];                                                                  \
            int64_t b = 0;                                                                                 \
            if (vec)                                                                                       \
                for (; b + SASHIMI_NB <= B; b += SASHIMI_NB)                                               \
                    SASHIMI_DISPATCH(NAME, group, nk, M, H, ne, X + b * S, U + b * H, G, W, A, E,          \
                                     R + b * nk * H)                                                       \
            for (; b < B; ++b) {                                                                           \
                if (vec)                                                                                   \
                    SASHIMI_DISPATCH(NAME, row, nk, M, H, ne, X + b * S, U + b * H, G, W, A, E,            \
                                     R + b * nk * H)                                                       \
                else                                                                                       \
                    NAME##_row_any(M, H, C, ne, nk, X + b * S, U + b * H, G, W, A, E, R + b * nk * H);     \
            }                                                                                              \
        }                                                                                                  \
    }

SASHIMI_SSM_PHASE(float, sashimi_vf32, sashimi_ssm_phase_f32)
SASHIMI_SSM_PHASE(double, sashimi_vf64, sashimi_ssm_phase_f64)

/* the version of this file's interface; the loader checks it */
int64_t sashimi_ssm_phase_abi(void) { return 2; }
