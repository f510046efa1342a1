// The rules every op must meet (oplog/validate.h): names, keys, values, and whole ops.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "oplog/validate.h"

namespace cairn {
namespace {

TEST(NamesTest, FollowTheNameRule) {
  EXPECT_TRUE(ValidateCollectionName("notes").ok());
  EXPECT_TRUE(ValidateCollectionName("_a9").ok());
  EXPECT_TRUE(ValidateCollectionName(std::string(63, 'a')).ok());
  EXPECT_FALSE(ValidateCollectionName(std::string(64, 'a')).ok());
  EXPECT_FALSE(ValidateCollectionName("").ok());
  EXPECT_FALSE(ValidateCollectionName("9lives").ok());
  EXPECT_FALSE(ValidateCollectionName("a-b").ok());
  EXPECT_FALSE(ValidateCollectionName("cairn_x").ok());
  EXPECT_FALSE(ValidateCollectionName("CAIRNx").ok());
  EXPECT_FALSE(ValidateFieldName("key").ok());
  EXPECT_FALSE(ValidateFieldName("KEY").ok());
  EXPECT_TRUE(ValidateFieldName("keys").ok());
}

TEST(KeysTest, AreUtf8OfOneTo1024Bytes) {
  EXPECT_TRUE(ValidateKey("doc-1").ok());
  EXPECT_TRUE(ValidateKey("\xc3\xa9t\xc3\xa9").ok());
  EXPECT_TRUE(ValidateKey(std::string(1024, 'k')).ok());
  EXPECT_FALSE(ValidateKey(std::string(1025, 'k')).ok());
  EXPECT_FALSE(ValidateKey("").ok());
  EXPECT_FALSE(ValidateKey("\xc3").ok());          // truncated sequence
  EXPECT_FALSE(ValidateKey("\xc0\xaf").ok());      // overlong
  EXPECT_FALSE(ValidateKey("\xed\xa0\x80").ok());  // surrogate
  EXPECT_FALSE(ValidateKey(std::string("a\0b", 3)).ok());
}

// A Value's type is which alternative holds it: strings and bytes of the same content differ.
TEST(ValuesTest, KeepTheirTypeAndCompareByIt) {
  const Value values[] = {Value::Null(), Value::Bool(false), Value::Int(0), Value::Double(0.0),
                          Value::String("a"), Value::Bytes("a")};
  const ValueType types[] = {ValueType::kNull, ValueType::kBool, ValueType::kInt,
                             ValueType::kDouble, ValueType::kString, ValueType::kBytes};
  for (size_t i = 0; i < 6; i++) {
    EXPECT_EQ(values[i].type(), types[i]) << i;
    for (size_t j = 0; j < 6; j++) EXPECT_EQ(values[i] == values[j], i == j) << i << " " << j;
  }
  EXPECT_EQ(Value::Bytes("a").as_string(), "a");
  EXPECT_EQ(Value::String("a").as_string(), "a");
  Value copy = Value::Bytes("xyz");
  Value moved = std::move(copy);
  EXPECT_EQ(moved, Value::Bytes("xyz"));
  EXPECT_EQ(Value::Double(std::nan("")), Value::Double(std::nan("")));  // by bit pattern
  EXPECT_NE(Value::Double(0.0), Value::Double(-0.0));
  EXPECT_LE(sizeof(Value), 40u);  // the type costs no byte beside the variant
}

TEST(ValuesTest, AreFiniteUtf8AndBounded) {
  EXPECT_TRUE(ValidateValue(Value::Null()).ok());
  EXPECT_TRUE(ValidateValue(Value::Double(1.5)).ok());
  EXPECT_FALSE(ValidateValue(Value::Double(std::numeric_limits<double>::infinity())).ok());
  EXPECT_FALSE(ValidateValue(Value::Double(std::nan(""))).ok());
  EXPECT_TRUE(ValidateValue(Value::String(std::string(kMaxValueBytes, 's'))).ok());
  EXPECT_FALSE(ValidateValue(Value::String(std::string(kMaxValueBytes + 1, 's'))).ok());
  EXPECT_FALSE(ValidateValue(Value::Bytes(std::string(kMaxValueBytes + 1, '\0'))).ok());
  EXPECT_TRUE(ValidateValue(Value::Bytes("\xff\xfe")).ok());    // bytes need not be UTF-8
  EXPECT_FALSE(ValidateValue(Value::String("\xff\xfe")).ok());  // strings must
}

TEST(OpsTest, EveryPartIsChecked) {
  Op op;
  op.kind = OpKind::kSet;
  op.collection = "notes";
  op.key = "n1";
  op.field = "title";
  op.value = Value::String("hello");
  EXPECT_TRUE(ValidateOp(op).ok());
  Op bad = op;
  bad.collection = "cairn_meta";
  EXPECT_EQ(ValidateOp(bad).code(), Code::kEINVAL);
  bad = op;
  bad.key = "";
  EXPECT_EQ(ValidateOp(bad).code(), Code::kEINVAL);
  bad = op;
  bad.field = "key";
  EXPECT_EQ(ValidateOp(bad).code(), Code::kEINVAL);
  bad = op;
  bad.value = Value::String("\xc0\xaf");
  EXPECT_EQ(ValidateOp(bad).code(), Code::kEINVAL);
  // A delete names no field: an empty one is fine there, and nowhere else.
  Op del = op;
  del.kind = OpKind::kDelete;
  del.field.clear();
  EXPECT_TRUE(ValidateOp(del).ok());
  Op inc = del;
  inc.kind = OpKind::kIncrement;
  EXPECT_EQ(ValidateOp(inc).code(), Code::kEINVAL);
}

}  // namespace
}  // namespace cairn
