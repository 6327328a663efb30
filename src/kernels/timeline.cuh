// Device side of the kernel timeline (timeline.hpp). With MOEKIT_TIMELINE
// off (every ordinary build) mark() and Scope compile to nothing. With it on,
// each translation unit holds its own copy of the log pointer (no
// relocatable device code), registered at load so timeline::attach reaches
// every copy.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/timeline.hpp"

#ifndef MOEKIT_TIMELINE
#define MOEKIT_TIMELINE 0
#endif

namespace moekit::kernels::timeline {

#if MOEKIT_TIMELINE
namespace {
__device__ Log g_log;  // this translation unit's copy
bool attach_unit(const Log& log) { return cudaMemcpyToSymbol(g_log, &log, sizeof(Log)) == cudaSuccess; }
const bool g_registered = register_unit(&attach_unit);
}  // namespace
#endif

// The lowest active lane of the calling warp appends (kind, event).
__device__ __forceinline__ void mark([[maybe_unused]] uint8_t kind, [[maybe_unused]] uint8_t event) {
#if MOEKIT_TIMELINE
  const unsigned active = __activemask();
  unsigned lane = 0, smid = 0;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  if (lane != static_cast<unsigned>(__ffs(active) - 1)) return;
  const Log log = g_log;
  if (log.records == nullptr) return;
  uint64_t now = 0, grid = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  const uint32_t region = smid % kLanes;
  const uint32_t i = atomicAdd(log.count + region, 1u);
  if (i >= log.capacity) return;
  Record r{};
  r.grid = grid;
  r.time = now;
  r.block = blockIdx.x;
  r.clock = static_cast<uint32_t>(clock());
  r.warp = static_cast<uint16_t>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) / 32);
  r.smid = static_cast<uint8_t>(smid);
  r.kind = kind;
  r.event = event;
  log.records[static_cast<size_t>(region) * log.capacity + i] = r;
#endif
}

// START when constructed, END when the kernel's scope ends (early returns too).
struct Scope {
  uint8_t kind;
  __device__ __forceinline__ explicit Scope(uint8_t k) : kind(k) { mark(k, kStart); }
  __device__ __forceinline__ ~Scope() { mark(kind, kEnd); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};

}  // namespace moekit::kernels::timeline
