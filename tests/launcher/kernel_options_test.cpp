// tests/launcher/kernel_options_test.cpp: --kernel-options parsing (launcher/kernel_options.h): every key
// lands in its CudaBackendOptions field, and a bad key or value is an error that names it and lists what is
// valid. Runs in every build: the options struct is a plain header.
#include <gtest/gtest.h>

#include <string>

#include "launcher/kernel_options.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {

std::string error_of(const std::string& text) {
  CudaBackendOptions o;
  try {
    apply_kernel_options(text, o);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << text;
    return e.what();
  }
  return "";
}

TEST(KernelOptions, EveryKeySetsItsField) {
  CudaBackendOptions o;
  const auto keys = apply_kernel_options(
      "gemv_max_rows=8,gemv_rolling=2,fuse_rope_kv_write=0,decode_attention_warps=0,fuse_rope_attention=0,"
      "decode_split_grain=64,decode_whole_blocks=0,decode_head_split=4,fuse_swiglu=0,pdl=0,cublaslt=0,"
      "quant_mma_min_rows=4,quant_mma_max_rows=32,moe_grouped=0,moe_gemv_max_rows=8,moe_gemm=1,fp8_cublaslt=2",
      o);
  EXPECT_EQ(keys.size(), 17u);
  EXPECT_EQ(o.fp8_cublaslt, 2);
  EXPECT_EQ(o.moe_gemm, 1);
  EXPECT_FALSE(o.moe_grouped);
  EXPECT_EQ(o.moe_gemv_max_rows, 8);
  EXPECT_EQ(o.gemv_max_rows, 8);
  EXPECT_EQ(o.gemv_rolling, 2);
  EXPECT_FALSE(o.fuse_rope_kv_write);
  EXPECT_FALSE(o.decode_attention_warps);
  EXPECT_FALSE(o.fuse_rope_attention);
  EXPECT_EQ(o.decode_split_grain, 64);
  EXPECT_FALSE(o.decode_whole_blocks);
  EXPECT_EQ(o.decode_head_split, 4);
  EXPECT_FALSE(o.fuse_swiglu);
  EXPECT_FALSE(o.pdl);
  EXPECT_FALSE(o.cublaslt);
  EXPECT_EQ(o.quant_mma_min_rows, 4);
  EXPECT_EQ(o.quant_mma_max_rows, 32);
  // Keys left out keep their defaults; a later key wins over an earlier one.
  CudaBackendOptions p;
  apply_kernel_options("gemv_max_rows=0,gemv_max_rows=4", p);
  EXPECT_EQ(p.gemv_max_rows, 4);
  EXPECT_TRUE(p.fuse_swiglu);
  EXPECT_TRUE(apply_kernel_options("", p).empty());
}

TEST(KernelOptions, UnknownKeyIsNamedWithTheValidOnes) {
  const std::string msg = error_of("fuse_swiglu=1,gemv_ks=4");
  EXPECT_NE(msg.find("unknown key 'gemv_ks'"), std::string::npos) << msg;
  for (const char* key : {"gemv_max_rows", "gemv_rolling", "decode_head_split", "fuse_swiglu", "pdl", "cublaslt"})
    EXPECT_NE(msg.find(key), std::string::npos) << key << " missing from: " << msg;
  // The removed experiments are unknown keys now.
  EXPECT_NE(error_of("pending_norms=1").find("unknown key 'pending_norms'"), std::string::npos);
}

TEST(KernelOptions, BadValuesNameTheKeyAndWhatItTakes) {
  EXPECT_NE(error_of("decode_split_grain=48").find("decode_split_grain must be 16, 32, 64 or 128, got '48'"),
            std::string::npos)
      << error_of("decode_split_grain=48");
  EXPECT_NE(error_of("fuse_swiglu=yes").find("fuse_swiglu must be 0 or 1"), std::string::npos);
  EXPECT_NE(error_of("gemv_max_rows=9").find("gemv_max_rows must be"), std::string::npos);
  EXPECT_NE(error_of("fp8_cublaslt=3").find("fp8_cublaslt must be 0, 1 or 2, got '3'"), std::string::npos);
  EXPECT_NE(error_of("decode_head_split=3").find("decode_head_split must be 0, 1, 2, 4 or 8"), std::string::npos);
  EXPECT_NE(error_of("pdl").find("'pdl' is not key=value"), std::string::npos);
  EXPECT_NE(error_of("=1").find("is not key=value"), std::string::npos);
}

TEST(KernelOptions, HelpListsEveryKeyWithItsDefault) {
  const std::string help = kernel_options_help();
  EXPECT_NE(help.find("gemv_max_rows (0, 1, 2, 3, 4, 5, 6, 7 or 8; default 2)"), std::string::npos) << help;
  EXPECT_NE(help.find("decode_split_grain (16, 32, 64 or 128; default 16)"), std::string::npos) << help;
  EXPECT_NE(help.find("pdl (0 or 1; default 1)"), std::string::npos) << help;
}

}  // namespace
}  // namespace strata::launcher
