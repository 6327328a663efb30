// The producer of the decode pair kernel (decode_gemm.cu: both GEMMs of a
// decode layer in one persistent launch), written against an environment so
// that the CPU tests can run it over simulated CTAs (test_gemm_config.cpp).
//
// Work items are numbered by tickets: GEMM 1's items are [0, items1), GEMM
// 2's are [items1, total). A CTA's producer claims its items one at a time
// from one ticket counter (zeroed by the kernel before), so the items a CTA
// holds rise, and every claimed item is held by a CTA that is running. A
// GEMM 2 item's rows are GEMM 1's output for its unit (its expert's rows):
// they load once the unit's GEMM 1 items are stored. Why it cannot hang,
// whatever CTAs are resident and whatever else runs on the GPU: a GEMM 1
// item waits for nothing but the previous kernel; a CTA holding one has
// only GEMM 1 items before it (tickets rise), so its producer arms and
// loads all of that item's stages and its consumers finish it; so every
// unit completes, and then every GEMM 2 item can load. A static assignment
// (item = blockIdx.x + i * gridDim.x) could leave a GEMM 1 item to a CTA
// that is not resident while the resident ones spin on GEMM 2 items.
//
// Stages are numbered in the order the producer arms them; stage s uses
// ring slot s % stages. Arming a stage loads its weights (never waited on:
// they are the caller's inputs), so weights run up to a ring ahead of rows;
// a stage's rows load in order, GEMM 1's after the PDL wait, GEMM 2's once
// their unit is complete. After the last item the producer arms one more
// slot with the end ticket, which tells the consumers to stop.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MOEKIT_PAIR_HD __host__ __device__ __forceinline__
#else
#define MOEKIT_PAIR_HD inline
#endif

namespace moekit::kernels::pair {

constexpr int32_t kEndTicket = -1;  // what the slot after the last stage carries
constexpr int kCounterStride = 32;  // int32 words between the kernel's counters: one 128-byte line each

// Env, the kernel's (or a simulation's) side:
//   int64_t claim()                    the next ticket (atomic, from 0)
//   bool slot_free(int slot, uint32_t parity)
//                                      the consumers have released the slot's
//                                      use of that parity (non-blocking)
//   void arm(int slot, int64_t ticket, int kb)
//                                      record the ticket in the slot, arm its
//                                      barrier for the whole stage, load weights
//   void arm_end(int slot)             record kEndTicket, complete the barrier
//   int64_t ticket_at(int slot)        the ticket arm recorded
//   bool wait_previous()               the PDL wait: whether the previous
//                                      kernel has finished (the kernel's blocks
//                                      until it has and returns true)
//   bool unit_ready(int64_t ticket)    a GEMM 2 ticket's unit is complete
//                                      (non-blocking; on true, ready to load)
//   void load(int slot, int64_t ticket, int kb)
//                                      load the stage's rows
struct Producer {
  // 32-bit counts and slots kept step by step: a 64-bit division or modulo
  // is a software routine on the GPU, and three of them a step made the
  // producer thread, not DRAM, set the pace (H200, 2026-12-05: GEMM 1 items
  // at half the decode kernel's speed).
  int32_t items1 = 0, total = 0;  // GEMM 1's items, all items (tickets are int32)
  int k_stages1 = 1, k_stages2 = 1, stages = 2;
  int32_t armed = 0;   // stages armed, the end slot included
  int32_t loaded = 0;  // stages whose rows are loading
  int arm_slot = 0;    // armed % stages
  int arm_round = 0;   // armed / stages, up to 2 (only its parity and "past the first" matter)
  int load_slot = 0;   // loaded % stages
  int32_t w_ticket = 0;  // the item of the next stage to arm ...
  int w_kb = 0;          // ... and its stage within the item
  int32_t r_ticket = 0;  // the item of the next stage to load rows of ...
  int r_kb = 0;
  int32_t ready = -1;  // the GEMM 2 ticket whose unit was found complete
  bool ended = false, waited = false;

  MOEKIT_PAIR_HD int k_stages(int32_t t) const { return t < items1 ? k_stages1 : k_stages2; }
  MOEKIT_PAIR_HD bool done() const { return ended && loaded + 1 == armed; }
  // After a step that did nothing: whether rows wait (on the previous
  // kernel or a unit: poll), else the next slot to arm is in use (block on
  // it: slot_to_arm() with parity_to_arm()).
  MOEKIT_PAIR_HD bool rows_waiting() const { return loaded < armed - (ended ? 1 : 0); }
  MOEKIT_PAIR_HD int slot_to_arm() const { return arm_slot; }
  // The parity of the slot's previous use, whose release arming waits for.
  MOEKIT_PAIR_HD uint32_t parity_to_arm() const { return static_cast<uint32_t>((arm_round - 1) & 1); }

  template <class Env>
  MOEKIT_PAIR_HD void start(Env& env) {
    w_ticket = claim(env);
  }

  // One step: arm the next stage if its slot is free, then load the oldest
  // armed stage's rows if they may load. Returns whether anything happened;
  // the PDL wait is taken only when nothing else could be done (so the
  // first ring of weights streams while the previous kernel finishes).
  template <class Env>
  MOEKIT_PAIR_HD bool step(Env& env) {
    bool did = false;
    if (!ended && (arm_round == 0 || env.slot_free(arm_slot, parity_to_arm()))) {
      if (w_ticket >= total) {
        env.arm_end(arm_slot);
        ended = true;
      } else {
        env.arm(arm_slot, w_ticket, w_kb);
        if (++w_kb == k_stages(w_ticket)) {
          w_kb = 0;
          w_ticket = claim(env);
        }
      }
      ++armed;
      if (++arm_slot == stages) {
        arm_slot = 0;
        arm_round = arm_round == 0 ? 1 : 3 - arm_round;  // 1, 2, 1, 2, ...: the parity flips each round
      }
      did = true;
    }
    if (loaded < armed - (ended ? 1 : 0)) {
      if (r_kb == 0) r_ticket = static_cast<int32_t>(env.ticket_at(load_slot));
      bool may = true;
      if (r_ticket < items1) {
        if (!waited) {
          if (did) {
            may = false;
          } else {
            waited = env.wait_previous();
            may = waited;
          }
        }
      } else if (ready != r_ticket) {
        may = env.unit_ready(r_ticket);
        if (may) ready = r_ticket;
      }
      if (may) {
        env.load(load_slot, r_ticket, r_kb);
        if (++r_kb == k_stages(r_ticket)) r_kb = 0;
        ++loaded;
        if (++load_slot == stages) load_slot = 0;
        did = true;
      }
    }
    return did;
  }

 private:
  template <class Env>
  MOEKIT_PAIR_HD int32_t claim(Env& env) {
    const int64_t t = env.claim();  // past total: the end (a clamp keeps it in int32)
    return t < total ? static_cast<int32_t>(t) : total;
  }
};

}  // namespace moekit::kernels::pair
