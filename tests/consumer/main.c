/* The C API from C: a rejected call reports a readable message. */
#include <moekit/moekit.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  moekit_problem_t p;
  size_t bytes = 0;
  moekit_problem_init(&p);
  p.device = MOEKIT_DEVICE_CPU;
  p.num_tokens = 4; p.hidden_size = 511; p.intermediate_size = 64;
  p.num_experts = p.num_local_experts = 8; p.top_k = 2;
  if (moekit_workspace_size(&p, &bytes) != MOEKIT_ERROR_INVALID_ARGUMENT ||
      strstr(moekit_last_error_message(), "hidden_size") == NULL) {
    printf("FAIL: %s\n", moekit_last_error_message());
    return 1;
  }
  p.hidden_size = 512;
  if (moekit_workspace_size(&p, &bytes) != MOEKIT_SUCCESS || bytes == 0) return 1;
  printf("consumer_c OK (%zu workspace bytes)\n", bytes);
  return 0;
}
