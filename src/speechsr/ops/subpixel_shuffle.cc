// SubpixelShuffle1D: 1-D sub-pixel shuffle (Kuleshov et al. SubPixel1D order).
//
//   input  [batch, width, channels]
//   output [batch, width * r, channels / r]
//   out[b, w * r + i, c] = in[b, w, i * (channels / r) + c]
//
// In the channels-last layout this element order is exactly what
// tf.reshape(x, [batch, width * r, channels / r]) produces; the kernel still
// spells the index mapping out so the definition lives in one place.
// CPU only (float, double); no XLA kernel, so models using it must be
// compiled with jit_compile=False. The gradient (the inverse shuffle, a
// reshape back to [batch, width, channels]) is registered from Python in
// speechsr/ops/__init__.py.
//
// Build: src/build_ops.sh  ->  src/speechsr/ops/_subpixel_shuffle.so

#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

namespace speechsr {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

REGISTER_OP("SubpixelShuffle1D")
    .Input("input: T")
    .Output("output: T")
    .Attr("r: int >= 1")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      ShapeHandle in = c->input(0);
      if (c->RankKnown(in) && c->Rank(in) != 3) {
        return errors::InvalidArgument(
            "SubpixelShuffle1D: input must be rank 3 [batch, width, channels], "
            "got rank ",
            c->Rank(in));
      }
      TF_RETURN_IF_ERROR(c->WithRank(in, 3, &in));
      int64_t r = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("r", &r));

      DimensionHandle channels = c->Dim(in, 2);
      if (c->ValueKnown(channels) && c->Value(channels) % r != 0) {
        return errors::InvalidArgument(
            "SubpixelShuffle1D: channels (", c->Value(channels),
            ") must be divisible by r (", r, ")");
      }
      DimensionHandle out_width;
      DimensionHandle out_channels;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(in, 1), r, &out_width));
      TF_RETURN_IF_ERROR(
          c->Divide(channels, r, /*evenly_divisible=*/true, &out_channels));
      c->set_output(0, c->MakeShape({c->Dim(in, 0), out_width, out_channels}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
1-D sub-pixel shuffle: [batch, width, channels] -> [batch, width*r, channels/r]
with out[b, w*r+i, c] = in[b, w, i*(channels/r)+c].
)doc");

template <typename T>
class SubpixelShuffle1DOp : public OpKernel {
 public:
  explicit SubpixelShuffle1DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("r", &r_));
    OP_REQUIRES(ctx, r_ >= 1,
                errors::InvalidArgument("SubpixelShuffle1D: r must be >= 1, got ",
                                        r_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    OP_REQUIRES(ctx, input.dims() == 3,
                errors::InvalidArgument(
                    "SubpixelShuffle1D: input must be rank 3 [batch, width, "
                    "channels], got shape ",
                    input.shape().DebugString()));
    const int64_t batch = input.dim_size(0);
    const int64_t width = input.dim_size(1);
    const int64_t channels = input.dim_size(2);
    OP_REQUIRES(ctx, channels % r_ == 0,
                errors::InvalidArgument(
                    "SubpixelShuffle1D: channels (", channels,
                    ") must be divisible by r (", r_, "); input shape ",
                    input.shape().DebugString()));
    const int64_t out_channels = channels / r_;

    TensorShape out_shape;
    OP_REQUIRES_OK(ctx, TensorShape::BuildTensorShape(
                            {batch, width * r_, out_channels}, &out_shape));
    // In row-major [batch, width, channels] memory, element (b, w, i*C/r + c)
    // sits at offset ((b*W + w)*r + i)*(C/r) + c, which is exactly the offset of
    // output element (b, w*r + i, c) in [batch, width*r, C/r]. The shuffle is
    // therefore a reinterpretation of the same buffer: share it (zero copy, as
    // TensorFlow's own Reshape does) instead of copying every element.
    Tensor output;
    OP_REQUIRES(ctx, output.CopyFrom(input, out_shape),
                errors::Internal("SubpixelShuffle1D: cannot view input of shape ",
                                 input.shape().DebugString(), " as ",
                                 out_shape.DebugString()));
    ctx->set_output(0, output);
  }

 private:
  int64_t r_ = 1;
};

#define REGISTER_SUBPIXEL_CPU(type)                                 \
  REGISTER_KERNEL_BUILDER(Name("SubpixelShuffle1D")                 \
                              .Device(DEVICE_CPU)                   \
                              .TypeConstraint<type>("T"),           \
                          SubpixelShuffle1DOp<type>)

REGISTER_SUBPIXEL_CPU(float);
REGISTER_SUBPIXEL_CPU(double);

#undef REGISTER_SUBPIXEL_CPU

}  // namespace speechsr
