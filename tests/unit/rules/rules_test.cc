#include "rules/rules.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "auth/jwt.h"

namespace cairn::rules {
namespace {

using Channels = std::vector<std::string>;

constexpr const char* kRules = R"({
  "collections": {
    "tasks":    {"channels": ["user:{owner}", "team:{team}"]},
    "profiles": {"channels": ["user:{$key}"]},
    "news":     {"channels": ["public"], "devices": "read-only"},
    "Mixed":    {"channels": ["org:{org}:{dept}"], "devices": "read-write"}
  },
  "grants": {"read":  ["public", "user:{sub}", "team:{teams[]}"],
             "write": ["user:{sub}", "team:{teams[]}"]}
})";

Rules Parsed(const std::string& text = kRules) {
  auto r = Rules::Parse(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : Rules();
}

std::string ParseError(const std::string& text) {
  auto r = Rules::Parse(text);
  EXPECT_FALSE(r.ok()) << text;
  if (!r.ok()) {
    EXPECT_EQ(r.status().code(), Code::kEINVAL);
    return r.status().message();
  }
  return "";
}

auth::Claims ClaimsOf(const std::string& sub, const std::vector<std::string>& teams,
                      bool admin = false) {
  auth::Claims c;
  c.subject = sub;
  c.admin = admin;
  c.values["sub"] = auth::ClaimValue{false, {sub}};
  c.values["teams"] = auth::ClaimValue{true, teams};
  return c;
}

TEST(RulesTest, ChannelsFollowTheFieldsAndTheKey) {
  Rules r = Parsed();
  EXPECT_EQ(r.Channels("tasks", "t1",
                       {{"owner", Value::String("alice")}, {"team", Value::String("red")}}),
            (Channels{"team:red", "user:alice"}));
  // Integers in decimal; a missing, null, empty, boolean, double or bytes field: no channel.
  EXPECT_EQ(r.Channels("tasks", "t1", {{"owner", Value::Int(-42)}}), (Channels{"user:-42"}));
  EXPECT_EQ(r.Channels("tasks", "t1", {}), Channels{});
  for (const Value& v : {Value::Null(), Value::String(""), Value::Bool(true), Value::Double(1.5),
                         Value::Bytes("ab")}) {
    EXPECT_EQ(r.Channels("tasks", "t1", {{"owner", v}, {"team", Value::String("red")}}),
              (Channels{"team:red"}));
  }
  EXPECT_EQ(r.Channels("profiles", "alice", {}), (Channels{"user:alice"}));
  EXPECT_EQ(r.Channels("news", "n1", {{"x", Value::Int(1)}}), (Channels{"public"}));
  // Two placeholders: both needed.
  EXPECT_EQ(r.Channels("Mixed", "k", {{"org", Value::String("o")}, {"dept", Value::Int(7)}}),
            (Channels{"org:o:7"}));
  EXPECT_EQ(r.Channels("Mixed", "k", {{"org", Value::String("o")}}), Channels{});
  // A collection is one whatever the case it is spelled in; one the rules do not name has none.
  EXPECT_EQ(r.Channels("NEWS", "n1", {}), (Channels{"public"}));
  EXPECT_EQ(r.Channels("other", "k", {{"owner", Value::String("alice")}}), Channels{});
  // Repeats go, and a channel longer than the limit is none.
  Rules twice = Parsed(R"({"collections": {"c": {"channels": ["u:{a}", "u:{b}", "v:{a}"]}}})");
  EXPECT_EQ(twice.Channels("c", "k", {{"a", Value::String("x")}, {"b", Value::String("x")}}),
            (Channels{"u:x", "v:x"}));
  EXPECT_EQ(twice.Channels("c", "k", {{"a", Value::String(std::string(kMaxChannelBytes, 'z'))}}),
            Channels{});
}

TEST(RulesTest, GrantsExpandTheClaims) {
  Rules r = Parsed();
  auto g = r.GrantsFor(ClaimsOf("alice", {"red", "blue", ""}));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_FALSE(g->admin);
  EXPECT_EQ(g->read, (std::set<std::string>{"public", "team:blue", "team:red", "user:alice"}));
  EXPECT_EQ(g->write, (std::set<std::string>{"team:blue", "team:red", "user:alice"}));
  EXPECT_TRUE(g->MayRead({"public"}));
  EXPECT_TRUE(g->MayRead({"team:green", "team:red"}));
  EXPECT_FALSE(g->MayRead({"team:green", "user:bob"}));
  EXPECT_FALSE(g->MayRead({}));
  EXPECT_FALSE(g->MayWrite({"public"}));

  // A claim of the wrong shape gives nothing: a scalar placeholder over an array, and the
  // other way round; a missing claim too.
  auth::Claims odd = ClaimsOf("alice", {});
  odd.values["teams"] = auth::ClaimValue{false, {"red"}};
  odd.values["sub"] = auth::ClaimValue{true, {"alice"}};
  g = r.GrantsFor(odd);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->read, (std::set<std::string>{"public"}));
  odd.values.clear();
  g = r.GrantsFor(odd);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->read, (std::set<std::string>{"public"}));
  EXPECT_TRUE(g->write.empty());

  // admin reads and writes everything, even documents in no channel.
  g = r.GrantsFor(ClaimsOf("root", {}, /*admin=*/true));
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->MayRead({}));
  EXPECT_TRUE(g->MayWrite({"user:bob"}));

  // Too many grants: refused, not cut short.
  std::vector<std::string> many;
  for (size_t i = 0; i <= kMaxGrants; i++) many.push_back("t" + std::to_string(i));
  g = r.GrantsFor(ClaimsOf("alice", many));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), Code::kEPERM);
}

TEST(RulesTest, WritesAreJudgedBeforeAndAfter) {
  Rules r = Parsed();
  auto alice = r.GrantsFor(ClaimsOf("alice", {"red"}));
  ASSERT_TRUE(alice.ok());
  const Fields mine{{"owner", Value::String("alice")}};
  const Fields bobs{{"owner", Value::String("bob")}};
  const Fields red_team{{"owner", Value::String("bob")}, {"team", Value::String("red")}};
  const Fields nobody{{"title", Value::String("x")}};
  // New, changed, deleted documents of hers.
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", nullptr, &mine).ok());
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", &mine, &mine).ok());
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", &mine, nullptr).ok());
  // Bob's document in her team: one writable channel is enough.
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", &red_team, &red_team).ok());
  // Bob's document: not before, and she may not make one his, nor one of nobody.
  for (auto [before, after] : {std::pair<const Fields*, const Fields*>{&bobs, &mine},
                               {&bobs, &bobs},
                               {&bobs, nullptr},
                               {&mine, &bobs},
                               {nullptr, &bobs},
                               {&mine, &nobody},
                               {nullptr, nullptr}}) {
    Status st = r.CheckWrite(*alice, "tasks", "t", before, after);
    EXPECT_EQ(st.code(), Code::kEPERM);
    EXPECT_NE(st.message().find("tasks/t"), std::string::npos) << st.message();
  }
  // Nor add a channel she may not write to her own, new or old (though one of its channels is
  // hers); adding her team's is hers to do.
  const Fields finance{{"owner", Value::String("alice")}, {"team", Value::String("finance")}};
  const Fields hers_red{{"owner", Value::String("alice")}, {"team", Value::String("red")}};
  EXPECT_EQ(r.CheckWrite(*alice, "tasks", "t", &mine, &finance).code(), Code::kEPERM);
  EXPECT_EQ(r.CheckWrite(*alice, "tasks", "t", nullptr, &finance).code(), Code::kEPERM);
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", &mine, &hers_red).ok());
  // A channel she is already in stays: bob's document in her team, edited by her.
  EXPECT_TRUE(r.CheckWrite(*alice, "tasks", "t", &red_team, &red_team).ok());
  // The reason names only channels she may read: not bob's, nor finance; her team's, yes.
  Status st = r.CheckWrite(*alice, "tasks", "t", &mine, &bobs);
  EXPECT_EQ(st.message().find("user:bob"), std::string::npos) << st.message();
  st = r.CheckWrite(*alice, "tasks", "t", nullptr, &finance);
  EXPECT_EQ(st.message().find("finance"), std::string::npos) << st.message();
  const Fields red_only{{"team", Value::String("red")}};
  st = r.CheckWrite(*alice, "tasks", "t", &red_team, &bobs);
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_EQ(st.message().find("user:bob"), std::string::npos) << st.message();
  auto blue = r.GrantsFor(ClaimsOf("carol", {"blue"}));
  ASSERT_TRUE(blue.ok());
  st = r.CheckWrite(*blue, "tasks", "t", &red_only, &red_only);
  EXPECT_EQ(st.code(), Code::kEPERM);
  auto red_reader = r.GrantsFor(ClaimsOf("dave", {"red"}));
  ASSERT_TRUE(red_reader.ok());
  st = r.CheckWrite(*red_reader, "tasks", "t", &bobs, &bobs);
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_EQ(st.message().find("user:bob"), std::string::npos) << st.message();
  // A delete of nothing is judged on the channels of its key alone.
  EXPECT_TRUE(r.CheckWrite(*alice, "profiles", "alice", nullptr, nullptr).ok());
  EXPECT_EQ(r.CheckWrite(*alice, "profiles", "bob", nullptr, nullptr).code(), Code::kEPERM);
  // Read-only for devices, whatever the channels; admin writes it; unnamed collections are
  // admin's only.
  const Fields any{{"x", Value::Int(1)}};
  st = r.CheckWrite(*alice, "news", "n", nullptr, &any);
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_NE(st.message().find("read-only"), std::string::npos) << st.message();
  EXPECT_EQ(r.CheckWrite(*alice, "other", "k", nullptr, &any).code(), Code::kEPERM);
  auto root = r.GrantsFor(ClaimsOf("root", {}, true));
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(r.CheckWrite(*root, "news", "n", nullptr, &any).ok());
  EXPECT_TRUE(r.CheckWrite(*root, "other", "k", &any, nullptr).ok());
  EXPECT_EQ(r.ReadOnlyCollections(), (std::vector<std::string>{"news"}));
}

TEST(RulesTest, BadFilesAreRefusedNamingTheKey) {
  struct Case {
    const char* text;
    const char* names;  // what the message must hold
  };
  const Case cases[] = {
      {R"({"collections": {}, "grant": {}})", "rules: grant: unknown key"},
      {R"({"grants": {}})", "rules: collections: missing"},
      {R"({"collections": []})", "rules: collections: missing, or not an object"},
      {R"([1])", "not a JSON object"},
      {R"({"collections": {"bad name": {"channels": []}}})", "collections.bad name"},
      {R"({"collections": {"$x": {"channels": []}}})", "collections.$x"},
      {R"({"collections": {"t": []}})", "collections.t: not an object"},
      {R"({"collections": {"t": {}}})", "collections.t.channels: missing"},
      {R"({"collections": {"t": {"channels": "u"}}})", "collections.t.channels: not a list"},
      {R"({"collections": {"t": {"channels": [1]}}})", "collections.t.channels[0]: not a string"},
      {R"({"collections": {"t": {"channels": ["a", ""]}}})", "collections.t.channels[1]: an empty"},
      {R"({"collections": {"t": {"channels": ["u:{owner"]}}})", "'{' without '}'"},
      {R"({"collections": {"t": {"channels": ["u:owner}"]}}})", "'}' without '{'"},
      {R"({"collections": {"t": {"channels": ["u:{}"]}}})", "an empty placeholder"},
      {R"({"collections": {"t": {"channels": ["u:{a{b}"]}}})", "inside a placeholder"},
      {R"({"collections": {"t": {"channels": ["u:{$id}"]}}})", "unknown placeholder {$id}"},
      {R"({"collections": {"t": {"channels": ["u:{tags[]}"]}}})", "not arrays"},
      {R"({"collections": {"t": {"channels": ["u:{a b}"]}}})", "collections.t.channels[0]: {a b}"},
      {R"({"collections": {"t": {"channels": [], "devices": "none"}}})",
       "collections.t.devices: must be"},
      {R"({"collections": {"t": {"channels": [], "filter": 1}}})", "collections.t.filter"},
      {R"({"collections": {"t": {"channels": []}, "T": {"channels": []}}})",
       "names the same collection"},
      {R"({"collections": {}, "grants": []})", "rules: grants: not an object"},
      {R"({"collections": {}, "grants": {"admin": []}})", "grants.admin: unknown key"},
      {R"({"collections": {}, "grants": {"read": ["{a[]}:{b[]}"]}})",
       "grants.read[0]: more than one {claim[]}"},
      {R"({"collections": {}, "grants": {"write": ["x", "{[]}"]}})", "grants.write[1]"},
      {R"({"collections": {}, "grants": {"read": ["{a"]}})", "grants.read[0]: '{' without"},
  };
  for (const Case& c : cases) {
    const std::string msg = ParseError(c.text);
    EXPECT_NE(msg.find(c.names), std::string::npos) << c.text << " -> " << msg;
  }
  // JSON syntax: the line and column.
  const std::string msg = ParseError("{\n  \"collections\": {\n    \"t\": {\"channels\": [}\n}");
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
  // A file that cannot be read.
  auto missing = Rules::Load("/nonexistent/rules.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kEIO);
}

TEST(RulesTest, TokensCarryTheirClaimsForGrants) {
  const std::string secret = "s3cret";
  const int64_t now = 1700000000;
  const std::string payload = R"({"sub": "alice", "exp": )" + std::to_string(now + 600) +
                              R"(, "teams": ["red", 7, true, {"x": 1}], "org": 12,
                                   "admin": false, "flag": true})";
  auto claims =
      auth::VerifyToken(auth::SignToken(R"({"alg":"HS256"})", payload, secret), secret, now);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_FALSE(claims->admin);
  ASSERT_EQ(claims->values.count("teams"), 1u);
  EXPECT_TRUE(claims->values.at("teams").array);
  EXPECT_EQ(claims->values.at("teams").items, (std::vector<std::string>{"red", "7"}));
  EXPECT_EQ(claims->values.at("org").items, (std::vector<std::string>{"12"}));
  EXPECT_EQ(claims->values.at("sub").items, (std::vector<std::string>{"alice"}));
  EXPECT_EQ(claims->values.count("flag"), 0u);  // a boolean is no grant's text

  Rules r = Parsed();
  auto g = r.GrantsFor(*claims);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->write, (std::set<std::string>{"team:7", "team:red", "user:alice"}));

  // "admin" must be a boolean; true makes an admin token.
  const std::string bad =
      R"({"sub": "a", "exp": )" + std::to_string(now + 600) + R"(, "admin": "yes"})";
  auto refused = auth::VerifyToken(auth::SignToken(R"({"alg":"HS256"})", bad, secret), secret, now);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("admin"), std::string::npos);
  const std::string root =
      R"({"sub": "a", "exp": )" + std::to_string(now + 600) + R"(, "admin": true})";
  auto admin = auth::VerifyToken(auth::SignToken(R"({"alg":"HS256"})", root, secret), secret, now);
  ASSERT_TRUE(admin.ok());
  EXPECT_TRUE(admin->admin);
}

// docs/sync-rules.md "Rules that change": the digest follows the rules, not their layout.
TEST(RulesTest, DigestFollowsTheRulesNotTheirLayout) {
  auto a = Rules::Parse(R"({"collections": {"tasks": {"channels": ["user:{owner}"]}},
                            "grants": {"read": ["user:{sub}"], "write": []}})");
  auto b = Rules::Parse(
      "{\"grants\":{\"write\":[],\"read\":[\"user:{sub}\"]},"
      "\"collections\":{\"tasks\":{\"channels\":[\"user:{owner}\"]}}}");
  auto c = Rules::Parse(R"({"collections": {"tasks": {"channels": ["team:{owner}"]}},
                            "grants": {"read": ["user:{sub}"], "write": []}})");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->digest().size(), 64u);
  EXPECT_EQ(a->digest(), b->digest());
  EXPECT_NE(a->digest(), c->digest());
}

// docs/sync-rules.md "Changes of view": a view is the channels granted (narrowed to those
// subscribed), or everything for an admin; the record a server keeps of a replica's views
// round-trips and a malformed one is refused.
TEST(RulesTest, ViewsAndTheirRecords) {
  Grants g;
  g.read = {"public", "team:red", "user:alice"};
  EXPECT_EQ(View::Of(g, {}).channels, g.read);
  EXPECT_EQ(View::Of(g, {"team:red", "team:blue"}).channels, std::set<std::string>{"team:red"});
  Grants admin;
  admin.admin = true;
  EXPECT_TRUE(View::Of(admin, {}).all);
  EXPECT_FALSE(View::Of(admin, {"team:blue"}).all);
  EXPECT_EQ(View::Of(admin, {"team:blue"}).channels, std::set<std::string>{"team:blue"});

  const View red = View::Of(g, {"team:red"});
  EXPECT_TRUE(red.Holds({"team:blue", "team:red"}));
  EXPECT_FALSE(red.Holds({"team:blue"}));
  EXPECT_FALSE(red.Holds({}));
  EXPECT_TRUE(View::Of(admin, {}).Holds({}));
  const View blue{false, {"team:blue"}};
  EXPECT_EQ(red.Union(blue).channels, (std::set<std::string>{"team:blue", "team:red"}));
  EXPECT_TRUE(red.Intersection(blue).channels.empty());
  EXPECT_EQ(red.Union(blue).Intersection(red), red);
  const View all{true, {}};
  EXPECT_TRUE(red.Union(all).all);
  EXPECT_EQ(all.Intersection(blue), blue);

  ViewRecord r{red, red.Union(blue), red.Intersection(blue), 42, "", {}};
  auto back = ViewRecord::Parse(r.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == r);
  EXPECT_FALSE(r.certain());
  ViewRecord held = ViewRecord::Held(all, 7, "digest");
  EXPECT_TRUE(held.certain());
  auto held_back = ViewRecord::Parse(held.ToJson());
  ASSERT_TRUE(held_back.ok());
  EXPECT_TRUE(*held_back == held);
  EXPECT_EQ(held_back->rules, "digest");
  // A record of the version before the rules' digest was kept: under none.
  auto earlier = ViewRecord::Parse(R"({"to":[],"maybe":[],"surely":[],"cursor":3})");
  ASSERT_TRUE(earlier.ok());
  EXPECT_EQ(earlier->rules, "");
  for (const char* bad : {"", "[]", "{\"to\":[],\"maybe\":[],\"surely\":[]}",
                          "{\"to\":[1],\"maybe\":[],\"surely\":[],\"cursor\":1}",
                          "{\"to\":\"x\",\"maybe\":[],\"surely\":[],\"cursor\":1}",
                          "{\"to\":[],\"maybe\":[],\"surely\":[],\"cursor\":-1}",
                          "{\"to\":[],\"maybe\":[],\"surely\":[],\"cursor\":1,\"rules\":2}"}) {
    EXPECT_EQ(ViewRecord::Parse(bad).status().code(), Code::kECORRUPT) << bad;
  }
}

// docs/sync-rules.md "Changes of view": a session that changes the view again after its cursor
// moved past the record's keeps what it knew of the earlier cursors apart; a client past that
// point held the session's view, not every view before it.
TEST(RulesTest, ViewRecordsKeepEarlierChangesApart) {
  const View red{false, {"team:red"}}, blue{false, {"team:blue"}}, green{false, {"team:green"}};
  // Renewed from red to blue at cursor 10, where the session began (nothing sent since):
  // clients at 10 or before hold some of each.
  ViewRecord r = ViewRecord::Held(red, 10, "d").Then(blue, 10);
  EXPECT_EQ(r.At(10).first, red.Union(blue));
  EXPECT_TRUE(r.At(10).second.channels.empty());
  EXPECT_EQ(r.At(11).first, blue);
  EXPECT_TRUE(r.earlier.empty());
  // Renewed again, to green, at cursor 20: past 10 the client held blue, so it may hold blue
  // and green at 20 (not red); at 10 or before, what it could hold then.
  ViewRecord r2 = r.Then(green, 20);
  EXPECT_EQ(r2.cursor, 20u);
  EXPECT_EQ(r2.to, green);
  EXPECT_EQ(r2.At(20).first, blue.Union(green));
  EXPECT_EQ(r2.At(15).first, blue.Union(green));
  EXPECT_EQ(r2.At(10).first, red.Union(blue));
  EXPECT_EQ(r2.At(3).first, red.Union(blue));
  EXPECT_EQ(r2.At(21).first, green);
  EXPECT_FALSE(r2.certain());
  auto back = ViewRecord::Parse(r2.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == r2) << r2.ToJson();
  EXPECT_EQ(back->rules, "d");
  // A certain record's change after its cursor: before it, exactly what it held.
  ViewRecord r3 = ViewRecord::Held(red, 5, "d").Then(blue, 9);
  EXPECT_EQ(r3.At(5).first, red);
  EXPECT_EQ(r3.At(5).second, red);
  EXPECT_EQ(r3.At(9).first, red.Union(blue));
  // Many changes: the oldest tiers merge (wider), the record stays small.
  ViewRecord many = ViewRecord::Held(red, 0, "d");
  for (uint64_t at = 1; at <= 20; at++) many = many.Then(at % 2 ? blue : red, at);
  EXPECT_EQ(many.earlier.size(), ViewRecord::kMaxTiers);
  EXPECT_EQ(many.At(0).first, red.Union(blue));
  EXPECT_EQ(many.At(20).first, red.Union(blue));
  for (
      const char* bad :
      {R"({"to":[],"maybe":[],"surely":[],"cursor":9,"earlier":{}})",
       R"({"to":[],"maybe":[],"surely":[],"cursor":9,"earlier":[{"maybe":[],"surely":[]}]})",
       R"({"to":[],"maybe":[],"surely":[],"cursor":9,"earlier":[{"cursor":9,"maybe":[],"surely":[]}]})",
       R"({"to":[],"maybe":[],"surely":[],"cursor":9,"earlier":[{"cursor":4,"maybe":[],"surely":[]},{"cursor":4,"maybe":[],"surely":[]}]})",
       R"({"to":[],"maybe":[],"surely":[],"cursor":9,"earlier":[{"cursor":4,"maybe":[1],"surely":[]}]})"}) {
    EXPECT_EQ(ViewRecord::Parse(bad).status().code(), Code::kECORRUPT) << bad;
  }
}

}  // namespace
}  // namespace cairn::rules
