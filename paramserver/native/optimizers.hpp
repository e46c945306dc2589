// Sparse optimizers applied to one row: the embedding w[dim] followed by its slots.
//
// Formulas follow TensorFlow's sparse apply ops so a NumPy reference can check them:
//   SGD:      w -= lr * g
//   Adagrad:  acc += g^2;  w -= lr * g / (sqrt(acc) + eps)              slots: acc[dim]
//   FTRL:     (McMahan et al. 2013, lr_power = -1/2)                    slots: z[dim], n[dim]
//             n' = n + g^2;  sigma = (sqrt(n') - sqrt(n)) / lr;  z += g - sigma * w;  n = n'
//             w = 0 if |z| <= l1 else -(z - sign(z) * l1) / ((beta + sqrt(n)) / lr + 2 * l2)
#pragma once
#include <cmath>
#include <cstdint>

namespace flywheel {

enum class OptimizerKind : int { SGD = 0, ADAGRAD = 1, FTRL = 2 };

struct OptimizerParams {
  OptimizerKind kind = OptimizerKind::ADAGRAD;
  float learning_rate = 0.01f;
  float initial_accumulator = 0.1f;  // Adagrad acc / FTRL n start value
  float epsilon = 1e-7f;             // Adagrad
  float l1 = 0.0f, l2 = 0.0f, beta = 0.0f;  // FTRL

  uint32_t slots() const { return kind == OptimizerKind::SGD ? 0 : kind == OptimizerKind::ADAGRAD ? 1 : 2; }

  void init_slots(float *row, uint32_t dim) const {
    float *slot = row + dim;
    if (kind == OptimizerKind::ADAGRAD) {
      for (uint32_t i = 0; i < dim; ++i) slot[i] = initial_accumulator;
    } else if (kind == OptimizerKind::FTRL) {
      for (uint32_t i = 0; i < dim; ++i) slot[i] = 0.0f;                  // z
      for (uint32_t i = 0; i < dim; ++i) slot[dim + i] = initial_accumulator;  // n
    }
  }

  void apply(float *row, const float *g, uint32_t dim) const {
    float *w = row;
    switch (kind) {
      case OptimizerKind::SGD:
        for (uint32_t i = 0; i < dim; ++i) w[i] -= learning_rate * g[i];
        break;
      case OptimizerKind::ADAGRAD: {
        float *acc = row + dim;
        for (uint32_t i = 0; i < dim; ++i) {
          acc[i] += g[i] * g[i];
          w[i] -= learning_rate * g[i] / (std::sqrt(acc[i]) + epsilon);
        }
        break;
      }
      case OptimizerKind::FTRL: {
        float *z = row + dim, *n = row + 2 * dim;
        for (uint32_t i = 0; i < dim; ++i) {
          float n_new = n[i] + g[i] * g[i];
          float sigma = (std::sqrt(n_new) - std::sqrt(n[i])) / learning_rate;
          z[i] += g[i] - sigma * w[i];
          n[i] = n_new;
          float az = std::fabs(z[i]);
          w[i] = az <= l1 ? 0.0f
                          : -(z[i] - std::copysign(l1, z[i])) / ((beta + std::sqrt(n_new)) / learning_rate + 2.0f * l2);
        }
        break;
      }
    }
  }
};

}  // namespace flywheel
