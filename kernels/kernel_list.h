/* The one list of kernels: name, parameter struct, the most threads a block may have and the
 * fewest blocks an SM must hold (the kernel's __launch_bounds__(max_threads, min_blocks); 1024
 * and 0 without bounds), read by
 * - the emulated driver (kernels/emu/driver.cpp: its kernel table, so a kernel missing from the
 *   sources is a link error, and a launch over the bound is refused as CUDA refuses it),
 * - .ci/kernel-static-checks (both numbers must match the compiled kernel's .maxntid and
 *   .minnctapersm, and its registers must allow min_blocks blocks of max_threads on an SM), and
 * - build.rs (OUT_DIR/kernel_list.rs: one typed Rust handle per kernel, so launch code naming a
 *   kernel that is not listed does not compile).
 * One entry per line. `w<V>` is the access width in bytes (Rust picks it from the row size and
 * the pointers' alignment; the batched copy always uses 16); `i32`/`i64` the index or offset
 * type. */
#ifndef CPUGPU_KERNEL
#error "define CPUGPU_KERNEL(name, params, max_threads, min_blocks) before including kernel_list.h"
#endif
#ifndef CPUGPU_TEST_KERNEL
#define CPUGPU_TEST_KERNEL(name, params, max_threads, min_blocks)
#endif

/* gather.cu */
CPUGPU_KERNEL(validate_indices_i32, CpugpuValidateParams, 1024, 0)
CPUGPU_KERNEL(validate_indices_i64, CpugpuValidateParams, 1024, 0)
CPUGPU_KERNEL(gather_rows_w1_i32, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w2_i32, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w4_i32, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w8_i32, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w16_i32, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w1_i64, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w2_i64, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w4_i64, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w8_i64, CpugpuGatherRowsParams, 256, 4)
CPUGPU_KERNEL(gather_rows_w16_i64, CpugpuGatherRowsParams, 256, 4)

/* scatter.cu */
CPUGPU_KERNEL(scatter_winners_i32, CpugpuScatterWinnersParams, 1024, 0)
CPUGPU_KERNEL(scatter_winners_i64, CpugpuScatterWinnersParams, 1024, 0)
CPUGPU_KERNEL(scatter_rows_w1_i32, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w2_i32, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w4_i32, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w8_i32, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w16_i32, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w1_i64, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w2_i64, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w4_i64, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w8_i64, CpugpuScatterRowsParams, 256, 4)
CPUGPU_KERNEL(scatter_rows_w16_i64, CpugpuScatterRowsParams, 256, 4)

/* pad.cu */
CPUGPU_KERNEL(pad_w1, CpugpuPadParams, 256, 4)
CPUGPU_KERNEL(pad_w2, CpugpuPadParams, 256, 4)
CPUGPU_KERNEL(pad_w4, CpugpuPadParams, 256, 4)
CPUGPU_KERNEL(pad_w8, CpugpuPadParams, 256, 4)
CPUGPU_KERNEL(pad_w16, CpugpuPadParams, 256, 4)

/* offsets.cu (lengths type, then offsets type) */
CPUGPU_KERNEL(offsets_single_i32_i32, CpugpuOffsetsParams, 1024, 0)
CPUGPU_KERNEL(offsets_single_i32_i64, CpugpuOffsetsParams, 1024, 0)
CPUGPU_KERNEL(offsets_single_i64_i32, CpugpuOffsetsParams, 1024, 0)
CPUGPU_KERNEL(offsets_single_i64_i64, CpugpuOffsetsParams, 1024, 0)
CPUGPU_KERNEL(offsets_check_i32, CpugpuOffsetsParams, 256, 4)
CPUGPU_KERNEL(offsets_check_i64, CpugpuOffsetsParams, 256, 4)
CPUGPU_KERNEL(offsets_lookback_i32_i32, CpugpuOffsetsParams, 256, 3)
CPUGPU_KERNEL(offsets_lookback_i32_i64, CpugpuOffsetsParams, 256, 3)
CPUGPU_KERNEL(offsets_lookback_i64_i32, CpugpuOffsetsParams, 256, 2)
CPUGPU_KERNEL(offsets_lookback_i64_i64, CpugpuOffsetsParams, 256, 2)

/* batched_copy.cu (flatten writes offsets of type i32/i64; split does not) */
CPUGPU_KERNEL(flatten_w16_i32, CpugpuBatchedCopyParams, 256, 3)
CPUGPU_KERNEL(flatten_w16_i64, CpugpuBatchedCopyParams, 256, 3)
CPUGPU_KERNEL(split_copy_w16, CpugpuBatchedCopyParams, 256, 3)

/* expand.cu (segment expansion; integer widths chosen at run time) */
CPUGPU_KERNEL(expand_scan, CpugpuExpandParams, 1024, 0)
CPUGPU_KERNEL(expand_write, CpugpuExpandParams, 1024, 0)
CPUGPU_KERNEL(expand_capture, CpugpuExpandParams, 1024, 0)

/* slot_mapping.cu */
CPUGPU_KERNEL(slot_mapping_validate, CpugpuSlotMappingParams, 1024, 0)
CPUGPU_KERNEL(slot_mapping_write, CpugpuSlotMappingParams, 1024, 0)
CPUGPU_KERNEL(slot_mapping_capture, CpugpuSlotMappingParams, 1024, 0)

/* windows.cu (windowed row gather) */
CPUGPU_KERNEL(gather_windows_validate, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_w1, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_w2, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_w4, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_w8, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_w16, CpugpuWindowsParams, 1024, 0)
CPUGPU_KERNEL(gather_windows_capture, CpugpuWindowsParams, 1024, 0)

/* staged_write.cu */
CPUGPU_KERNEL(staged_write_w1, CpugpuStagedWriteParams, 1024, 0)
CPUGPU_KERNEL(staged_write_w2, CpugpuStagedWriteParams, 1024, 0)
CPUGPU_KERNEL(staged_write_w4, CpugpuStagedWriteParams, 1024, 0)
CPUGPU_KERNEL(staged_write_w8, CpugpuStagedWriteParams, 1024, 0)
CPUGPU_KERNEL(staged_write_w16, CpugpuStagedWriteParams, 1024, 0)

/* step.cu (the fused step) */
CPUGPU_KERNEL(step_validate, CpugpuStepParams, 1024, 0)
CPUGPU_KERNEL(step_write, CpugpuStepParams, 1024, 0)
CPUGPU_KERNEL(step_capture, CpugpuStepParams, 1024, 0)

/* test_only/canary.cu: deliberately broken, emulator builds only */
CPUGPU_TEST_KERNEL(canary_read_past_end, CpugpuCanaryParams, 1024, 0)
CPUGPU_TEST_KERNEL(canary_shared_race, CpugpuCanaryParams, 1024, 0)
CPUGPU_TEST_KERNEL(canary_shared_race_mid, CpugpuCanaryParams, 1024, 0)
CPUGPU_TEST_KERNEL(canary_divergent_barrier, CpugpuCanaryParams, 1024, 0)
/* test_only/emu_selftest.cu: the emulator's own primitives */
CPUGPU_TEST_KERNEL(emu_selftest_warp_ops, CpugpuCanaryParams, 1024, 0)
