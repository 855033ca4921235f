"""How Tencent ncnn's Arm convolution kernels split work: register tiles and threads.

Read from Tencent/ncnn @a4d2ea1 (aarch64 paths), the version the fidelity table cites:

- im2col GEMM (`src/layer/arm/convolution_im2col_gemm.h`, `_fp16s.h`, `_int8.h`): every conv
  that is not Winograd or depthwise -- 1x1 included (`convolution_arm.cpp` create_pipeline:
  `... || (kernel_w == 1 && kernel_h == 1)`) -- first writes the whole im2col matrix BT
  (K x N, N = output pixels) in parallel, then runs the GEMM with output channels (M) as
  rows. The micro-kernel covers 8 output channels x 12 pixels (fp32 and fp16sa:
  `convolution_gemm_transB_packed_tile` `ii += 8`, `jj += 12`; int8: 8 x 8).
- Threads: `#pragma omp parallel for` over nn_M = ceil(M / TILE_M) row blocks of output
  channels only; TILE_M comes from `convolution_im2col_gemm_get_optimal_tile_mnk` (rounded
  to 8, split by the thread count), so a conv with 16 output channels keeps two threads busy
  whatever the thread count.
- Depthwise (`convolutiondepthwise_3x3_pack4.h`, `_pack8_fp16s.h`): `#pragma omp parallel
  for` over channel packs (channels / elempack); elempack is the vector width when the
  channels divide by it, else 4, else 1 (`convolutiondepthwise_arm.cpp`).
- Cortex-A53 (`a53_fp32_load_share`): `docs/developer-guide/arm-a53-a55-dual-issue.md`: on
  the A53 a 128-bit vector load does not dual-issue with fmla (2 cycles, the target's
  `vector_load_cycles`), a 64-bit one takes 1 cycle, a 64-bit integer load and an `ins`
  dual-issue with fmla. The generic fp32 loops load q registers; since PR #4596
  (2023-04-07, first in release 20230517) the fp32 im2col GEMM and Winograd GEMM have A53
  variants (`use_a53_a55_optimized_kernel`, set in `option.cpp` when the thread runs on an
  A53 / A55) that load 64 bits into the vector register and the other 64 through an integer
  register. The int8 im2col GEMM has no A53 variant (`convolution_im2col_gemm_int8.h`: no
  use_a53_a55_optimized_kernel; `a53_int8_load_share`).
"""

from __future__ import annotations

from hwmodels.kernels.jit import njit

TILE_OC = 8          # convolution_im2col_gemm.h: ii += 8 (aarch64 micro-kernel rows)
TILE_PIX = 12        # convolution_im2col_gemm.h / _fp16s.h: jj += 12 (pixels per tile)
TILE_PIX_INT8 = 8    # convolution_im2col_gemm_int8.h: jj += 8
M_BLOCK = 32         # get_optimal_tile_mnk (fp32, int8): nn_M = (M + 31) / 32
M_BLOCK_FP16 = 64    # get_optimal_tile_mnk_fp16sa: nn_M = (M + 63) / 64
# convolution_gemm_transB_packed_tile (`convolution_im2col_gemm.h`, fp32 8 x 12, 24 fmla per
# k) and _fp16sa (`_fp16s.h`, 8 x 12 fp16, 12 fmla per k) @a4d2ea1, around the k loop of
# every tile: at k == 0 the accumulators are set from one bias load, 22 (fp32) / 11 (fp16)
# `mov`; at k_end (out_elempack 4 / 8) they are stored, 24 / 12 q registers (`st1`). Assumed:
# a mov or a q store takes one vector-pipe issue slot, as an fmla does: a tile costs
# (22 + 24) / 24 = (11 + 12) / 12 k steps more than its k loop
TILE_EDGE_K = 23.0 / 12.0
STRIDE2_MAX_IN_PER_OUT = 5.2  # 4 input pixels per output at stride 2, + 30 % padding slack
GEMM_FMLA_PER_K = 24.0       # fp32 8 x 12 tile: 8 x 12 / 4 lanes fmla per k step
GEMM_Q_LOADS_PER_K = 5.0     # and 5 128-bit operand loads (A: 8 floats, B: 12 floats); the
# release 20211208 loop (`convolution_sgemm_pack4.h` im2col_sgemm_pack4_neon, 8 outch x 12
# pixels, the Zero 2 W rows) has the same 96 fmla and 20 q loads (5 ld1 of 4) per 4 k
# ncnn 20230517 A53 loop (`convolution_im2col_gemm.h` convolution_gemm_transB_packed_tile,
# `// a53` branch, 4 k per pass): 32 groups of 3 fmla, each led by a pair that does not
# dual-issue with fmla (20 `ldr d` + `ins`, 12 `nop` + `nop` / `prfm`; a vector load cannot
# issue on an fmla's 4th cycle) -- 8 issue cycles without fmla per k step
A53_LOOP_IDLE_CYCLES_PER_K = 8.0


def a53_fp32_load_share(fmla_cycles: float, q_load_cycles: float, tuned: bool) -> float:
    """Share of the fmla-bound fp32 MAC rate ncnn's 8 x 12 GEMM loop reaches on an in-order
    Cortex-A53 whose 128-bit fmla issues every `fmla_cycles` cycles and whose 128-bit vector
    load holds the issue `q_load_cycles` cycles: per k step 24 fmla and the issue cycles
    that hold none, 5 q loads in the generic loop, A53_LOOP_IDLE_CYCLES_PER_K in the A53
    loop (`tuned`, ncnn 20230517 on)."""
    fmla = GEMM_FMLA_PER_K * fmla_cycles
    idle = A53_LOOP_IDLE_CYCLES_PER_K if tuned else GEMM_Q_LOADS_PER_K * q_load_cycles
    return fmla / (fmla + idle)


def fc_weight_bytes(release_2022h2: bool) -> int:
    """Bytes per weight of ncnn's float InnerProduct on an aarch64 core without fp16
    arithmetic. With the default `opt.use_fp16_storage` (`src/option.cpp`) it converts the
    weights to fp16 at load (benchncnn sets it too: `benchmark/benchncnn.cpp`) and widens
    them to fp32 in the kernel, which reads and writes fp32 blobs (`innerproduct_arm.cpp`
    create_pipeline: `#if NCNN_VFPV4 if (cpu_support_arm_vfpv4() && opt.use_fp16_storage)
    return create_pipeline_fp16s(opt)`; `cpu.cpp`: cpu_support_arm_vfpv4() returns 1 on
    __aarch64__; `CMakeLists.txt` turns NCNN_VFPV4 on for aarch64). At batch 1 the layer
    streams its weights once per run, so this halves its DRAM bytes. The path came with PR
    #3950 (2022-06-24); the releases before it (`release_2022h2` False) keep fp32 weights."""
    return 2 if release_2022h2 else 4


# Arm Cortex-A53 MPCore TRM (ARM DDI 0500D) 6.6.2 "Data prefetching and monitoring": the
# prefetcher "recognizes a sequence of data cache misses at a fixed stride pattern that lies
# in four cache lines, plus or minus"; misses further apart are not prefetched (the A55 TRM,
# by contrast, tracks multiple streams in parallel)
A53_PREFETCH_WINDOW_BYTES = 4 * 64


def fc_interleaved_rows(release_2022h2: bool) -> int:
    """Weight rows one task of ncnn's fp32 InnerProduct reads side by side (batch 1, aarch64
    without fp16 storage). Before PR #3950 (`fc_weight_bytes`) create_pipeline kept the
    weights unpacked and forward() (`innerproduct_arm.cpp` @ed1fb21, 2021-11-21, in release
    20211208) runs `p = pp * 4` with four pointers w0..w3 = weight + num_input * (p + 0..3),
    one 128-bit load from each per step: four streams num_input floats apart, so consecutive
    misses are a row apart and, on a Cortex-A53, outside its prefetch window
    (`fc_rows_unprefetched`). The fp16 path packs four outputs' weights into one contiguous
    row (`weight_data_fp16`, out_elempack 4): one stream (0 here)."""
    return 0 if release_2022h2 else 4


@njit(cache=True)
def fc_rows_unprefetched(rows: float, k: float, ebw: float) -> bool:
    """Whether side-by-side weight rows of k weights (`fc_interleaved_rows`) put consecutive
    DRAM misses further apart than the A53 prefetcher's window."""
    return rows > 1 and k * ebw > A53_PREFETCH_WINDOW_BYTES


# convolution_im2col_gemm_int8.h convolution_gemm_transB_packed_tile_int8, aarch64 without
# dotprod, 8 x 8 tile, one k loop step of 4 (256 MACs): 32 smull/smull2/smlal/smlal2, 16
# sadalp, 4 rev64 and 4 ext, and two `ld1 {vA.16b, vB.16b}` (4 q registers). LLVM
# AArch64SchedA53.td puts every ASIMD integer instruction on the A53's one FP/ASIMD ALU pipe
# (A53UnitFPALU, WriteVd / WriteVq), so the 24 others issue in turn with the multiplies
INT8_MULS_PER_STEP = 32.0
INT8_OTHER_NEON_PER_STEP = 24.0
INT8_Q_LOADS_PER_STEP = 4.0


def a53_int8_load_share(mul_cycles: float, q_load_cycles: float) -> float:
    """Share of the multiply-bound int8 MAC rate ncnn's int8 GEMM loop reaches on a
    Cortex-A53 whose 128-bit NEON instructions issue every `mul_cycles` cycles, one at a
    time, and whose 128-bit vector load holds the issue `q_load_cycles` cycles
    (`docs/developer-guide/arm-a53-a55-dual-issue.md`; the int8 loop has no A53 variant)."""
    mul = INT8_MULS_PER_STEP * mul_cycles
    return mul / (mul + INT8_OTHER_NEON_PER_STEP * mul_cycles
                  + INT8_Q_LOADS_PER_STEP * q_load_cycles)


# convolution_winograd_dot_pack8to4_int8.h @20230517 (the int8 F(4,3) GEMM without
# dotprod, 12 tiles x 8 channels per pass): 96 smlal + 96 smlal2 (by element, 16-bit
# products into 4 int32 lanes) and 10 `ld1` of 2 q registers
WG_INT8_MULS_PER_PASS = 192.0
WG_INT8_Q_LOADS_PER_PASS = 20.0


def a53_int8_winograd_load_share(mul_cycles: float, q_load_cycles: float) -> float:
    """Share of the multiply-bound rate ncnn's int8 Winograd GEMM loop reaches on a
    Cortex-A53 (`a53_int8_load_share`'s issue rules: its q loads do not dual-issue)."""
    mul = WG_INT8_MULS_PER_PASS * mul_cycles
    return mul / (mul + WG_INT8_Q_LOADS_PER_PASS * q_load_cycles)


@njit(cache=True)
def lrn_layout_bytes(fp16_storage: bool) -> float:
    """Bytes per element ncnn moves to hand its LRN a blob and take it back: `LRN_arm`
    (`lrn_arm.h`, @a4d2ea1) declares neither `support_packing` nor `support_fp16_storage`
    (Layer's defaults: false), so `NetPrivate::convert_layout` (`net.cpp`) unpacks the
    packed input to elempack 1, then (fp16 storage) casts it to fp32 before the layer, and the
    next layer (pooling: both supported) casts back and repacks. fp16 storage: unpack 2 + 2,
    cast 2 + 4, cast 4 + 2, pack 2 + 2 = 20 bytes; fp32 (pack 4): unpack 4 + 4, pack 4 + 4."""
    return 20.0 if fp16_storage else 16.0


@njit(cache=True)
def ceil_to(x: int, q: int) -> int:
    """x rounded up to a multiple of q."""
    return (x + q - 1) // q * q


@njit(cache=True)
def tile_oc(m: int, threads: int, cores: int, block: int) -> int:
    """TILE_M (output channels per task) of ncnn's get_optimal_tile_mnk for M = m output
    channels on `threads` threads (aarch64 branch, line for line)."""
    nn = (m + block - 1) // block
    tile = max(8, ceil_to((m + nn - 1) // nn, 8))
    tile *= min(threads, cores)
    nn = (m + tile - 1) // tile
    tile = min(tile, ceil_to((m + nn - 1) // nn, 8))
    if threads > 1:
        tile = min(tile, ceil_to(max(1, tile // threads), 8))
    return tile


@njit(cache=True)
def conv_gemm_split(pixels: int, oc: int, k: float, groups: int, threads: int, cores: int,
                    eb: float) -> tuple[float, float]:
    """(threads that get work, register-tile MACs of the busiest thread) of ncnn's im2col
    GEMM: tasks of TILE_M output channels; each tile covers TILE_OC x TILE_PIX outputs
    (edge tiles cost a full tile); groups run one after another."""
    tile = tile_oc(oc, threads, cores, M_BLOCK_FP16 if eb == 2.0 else M_BLOCK)
    tasks = (oc + tile - 1) // tile
    rows = min((tasks + threads - 1) // threads * tile, ceil_to(oc, TILE_OC))
    pix = ceil_to(pixels, TILE_PIX_INT8 if eb == 1.0 else TILE_PIX)
    return float(min(threads, tasks)), groups * rows * pix * k


# conv3x3s1_winograd_get_optimal_tile_mnk (`convolution_3x3_winograd.h`, `_fp16s.h`, `_int8.h`
# @a4d2ea1, aarch64): TILE_M = 8 x min(nT, cores), then capped at ceil8(TILE_M / nT): 8
# output channels per task at every thread count
WINOGRAD_TILE_M = 8


@njit(cache=True)
def winograd_input_sweeps(cout: float, threads: float) -> float:
    """Times ncnn's Winograd conv reads its transformed input BT from beyond the shared last
    cache level when BT does not fit it. conv3x3s1_winograd{23,43,63} (@a4d2ea1; the fp16
    and int8 files alike) write BT once, then `#pragma omp parallel for` over nn_M =
    ceil(cout / WINOGRAD_TILE_M) tasks, each walking every (j, k) tile of BT before its
    output transform: nn_M sweeps of BT in all, whatever TILE_N and TILE_K. With no
    schedule clause libgomp splits the loop statically: each thread takes a run of equal
    tasks, all start together and walk BT in the same order, so a line one thread brings into
    the shared level serves the others: one DRAM sweep per round of `threads` tasks (assumed:
    the threads stay in lockstep, none lagging by a cache's worth). One thread: nn_M sweeps.
    Release 20211208's loop (`convolution_3x3_pack4.h` conv3x3s1_winograd64_pack4_neon)
    splits its dot products the same way: `omp parallel for` over outch >> 1 pairs of
    4-channel packs, 8 channels a task."""
    tasks = (cout + WINOGRAD_TILE_M - 1) // WINOGRAD_TILE_M
    t = max(1.0, min(threads, tasks))
    return (tasks + t - 1) // t


@njit(cache=True)
def depthwise_split(channels: int, threads: int, lanes: int) -> tuple[float, float]:
    """(threads that get work, channel vectors of the busiest thread) of ncnn's depthwise
    kernels: one task per channel pack of elempack = lanes, 4 or 1 channels."""
    pack = lanes if channels % lanes == 0 else (4 if channels % 4 == 0 else 1)
    tasks = (channels + pack - 1) // pack
    t = min(threads, tasks)
    return float(t), float((tasks + t - 1) // t)


@njit(cache=True)
def depthwise_generic(taps: int, in_per_out: float) -> bool:
    """Whether ncnn runs a depthwise conv on its generic loop: specialised kernels exist for
    3x3 and 5x5 at stride 1 and 2 (`convolutiondepthwise_arm.cpp` convdw3x3s1/s2 and
    convdw5x5s1/s2 for pack4, `_asimdhp.cpp` for pack8); anything else (7x7, stride 3) takes
    the loop that loads the weight vector next to the input vector for every tap
    (`for (int k = 0; k < maxk; k++)`: two loads per FMA). `in_per_out`: input pixels per
    output pixel (about 1 at stride 1, 4 at stride 2)."""
    return (taps != 9 and taps != 25) or in_per_out > STRIDE2_MAX_IN_PER_OUT


# ncnn's direct fp16-arithmetic convs (`convolution_arm_asimdhp.cpp` create_pipeline_fp16s /
# forward_fp16sa @10e3395, the Pi 5 rows' tree): prefer_sgemm is cleared, so no im2col GEMM,
# for these (kernel taps, stride^2, input elempack) when the output elempack is 8. Each kernel
# (`convolution_{3x3,5x5}_pack8_fp16s.h`, `_3x3_pack1to8_fp16s.h`, `_7x7_pack1to8_fp16s.h`)
# keeps one 8-lane fp16 accumulator per output pixel of its widest `j` loop (`j += 4`: v28-v31)
# and feeds it by-element fmla, one dependent chain per accumulator. Rows: (taps, stride^2,
# in pack, chains, max cin (0: any), max cout): taken when cin < max cin or cout < max cout.
DIRECT_FP16 = (
    (25.0, 1.0, 8.0, 4.0, 0.0, 0.0),      # conv5x5s1_pack8_fp16sa_neon: j += 4
    (25.0, 4.0, 8.0, 2.0, 16.0, 88.0),    # conv5x5s2_pack8_fp16sa_neon: j += 2
    (9.0, 4.0, 8.0, 4.0, 64.0, 128.0),    # conv3x3s2_pack8_fp16sa_neon: j += 4
    (9.0, 4.0, 1.0, 4.0, 0.0, 0.0),       # conv3x3s2_pack1to8_fp16sa_neon: j += 4
    (49.0, 4.0, 1.0, 8.0, 0.0, 0.0),      # conv7x7s2_pack1to8_fp16sa_neon: j += 8
)
DIRECT_LANES = 8.0      # fp16 lanes per accumulator (elempack 8)
# input / output elements over taps x cin x out pixels that still name a (taps, stride): the
# GEMM view gives k = taps * cin and a_in = cin * in pixels (= out pixels * stride^2 + pad)
DIRECT_RATIO_SLACK = 0.2


@njit(cache=True)
def elempack_fp16(c: float) -> float:
    """ncnn's elempack for c channels on an fp16-arithmetic core (`convolution_arm.cpp`
    create_pipeline: 8 when c divides by 8, else 4, else 1)."""
    return 8.0 if c % 8 == 0 else (4.0 if c % 4 == 0 else 1.0)


@njit(cache=True)
def direct_fp16_kernel(m: float, n: float, k: float, g: float, ain: float) -> tuple[float, float]:
    """(accumulator chains, input channels) of the direct fp16sa kernel ncnn runs a conv
    with (`DIRECT_FP16`), (0, 0) when it takes another path. m output pixels, n output and
    k = taps x cin inputs per group, g groups (ncnn runs each group as its own conv), a_in
    input elements. The GEMM view has no kernel shape, so taps / stride^2 is read from
    k / (a_in / (m g)) and matched within DIRECT_RATIO_SLACK."""
    if m < 1.0 or k < 1.0 or ain < 1.0 or elempack_fp16(n) != DIRECT_LANES:
        return 0.0, 0.0
    ratio = k * m * g / ain
    for taps, s2, pin, chains, max_cin, max_cout in DIRECT_FP16:
        cin = k / taps
        if (abs(ratio / (taps / s2) - 1.0) > DIRECT_RATIO_SLACK or k % taps != 0
                or elempack_fp16(cin) != pin):
            continue
        if max_cin == 0.0 or cin < max_cin or n < max_cout:
            return chains, cin
    return 0.0, 0.0


@njit(cache=True)
def chain_share(chains: float, fma_latency: float, pipes: float) -> float:
    """Share of the FMA peak a kernel with `chains` independent accumulator chains issues:
    each chain takes one FMA per `fma_latency` cycles, so chains / latency per cycle, at
    most `pipes` (1 when the latency is not described or no chains are given)."""
    if fma_latency <= 0.0 or chains <= 0.0:
        return 1.0
    return min(1.0, chains / (fma_latency * pipes))


@njit(cache=True)
def direct_pass_bytes(ain: float, aout: float, n: float, cin: float, eb: float) -> float:
    """Bytes a direct fp16sa conv moves outside its registers: each task (one output channel
    pack, `#pragma omp parallel for` over outch) reads the whole input, and for every input
    channel pack loads and stores its output accumulators (`ld1 {v28..v31}, [%0]` ... `st1`;
    out0.fill(bias) first)."""
    packs_out = n / DIRECT_LANES
    packs_in = max(1.0, cin / elempack_fp16(cin))
    return (ain * packs_out + aout * 2.0 * packs_in) * eb


# taps / stride^2 of a conv's GEMM view (k m g / a_in) above which it is a k x k conv with
# k > 1 (3x3 stride 2: 2.25); 1x1 convs give 1 (stride 1) or 0.25 (stride 2)
PADDED_MIN_RATIO = 1.5


@njit(cache=True)
def padded_copy_bytes(m: float, k: float, g: float, ain: float, eb: float) -> float:
    """Bytes of the bordered copy ncnn makes of a conv's input before it runs: the forward
    of Convolution_arm (fp32, fp16sa and int8, on the int8 blob after quantising) and of
    ConvolutionDepthWise_arm calls make_padding, which for any padding runs
    copy_make_border, a Padding layer (`src/mat.cpp`, omp over channels; @20230517, and so
    @20211208 and @10e3395): read the input, write the copy, which the kernel then reads.
    Assumed: every conv with a kernel larger than 1x1 is padded (the measured networks pad
    "same"), and the copy is the input's size (the border adds (H + 2 pad)^2 / H^2)."""
    if m < 1.0 or ain <= 0.0 or k * m * g / ain <= PADDED_MIN_RATIO:
        return 0.0
    return 2.0 * ain * eb
