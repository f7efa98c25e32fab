//! [`RedisLimiter`]: every limit of a request decided in Redis, in one script call (SPEC §5).
//!
//! The script is GCRA with the in-process limiter's own arithmetic (`keygate_domain::gcra`, in
//! nanoseconds, the emission interval `period / limit` rounded down, a burst of exactly `limit`
//! intervals), kept per limiter as four doubles packed in 32 bytes (`struct.pack('<dddd', …)`;
//! reading and writing them as text cost Redis a third more): how far its TAT was ahead of the
//! time of its last admission (ns), that time (µs, Redis's `TIME`), and the limit and period it
//! was computed under. Storing the debt rather than the TAT keeps every number the script handles
//! exact in Lua's doubles (nanoseconds since the epoch would not be). Time is Redis's own, so the
//! nodes' clocks do not matter. A limiter stored under another limit is rescaled first, so a changed limit applies to
//! the very next request (SPEC §5). Each limiter expires once it is full again: an idle key
//! leaves nothing behind. The script answers each limiter's debt before the request and whether it
//! admitted; the decision (remaining, reset, retry) is then `gcra::check`'s, so a node in cluster
//! mode answers exactly what a single node would.
//!
//! All of one request's limiters share a hash tag, its account (`kg:{acct_…}:…`), so they live in
//! one hash slot and one script call can touch them all on a Redis Cluster. Limits that belong to
//! no account (the failed-attempt and sign-in throttles, a dashboard user's changes) are each
//! tagged by themselves.
//!
//! While Redis cannot answer ([`Redis::up`]), the same checks are decided by an
//! [`InProcessLimiter`] in this node: with N nodes, a limit then admits up to N times its rate
//! (each node its own allowance) until Redis answers again.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_domain::AccountId;
use keygate_domain::gcra::{self, Decision, Quota};
use keygate_engine::ratelimit::{InProcessLimiter, LimitKey, LimiterError, RateLimiter, Spent};
use redis::Script;

use crate::redis::{Redis, RedisError};

/// KEYS: the limiters, in order. ARGV[1]: cost; ARGV[2]: 1 to spend, 0 to look only; then for
/// each limiter its limit and period (ns). Replies `{now (µs), admitted₁, debt₁, admitted₂,
/// debt₂, …}`, stopping after the first refusal: `debt` is how far the limiter's TAT was ahead of
/// now before this request (ns, after any rescaling). Called with no keys it only answers the
/// time: the health probe.
pub(crate) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local spend = ARGV[2] == '1'
local out = {now}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  local interval = math.floor(period / limit)
  local debt = 0
  local state = redis.call('GET', key)
  if state and #state == 32 then
    local s_debt, s_at, s_limit, s_period = struct.unpack('<dddd', state)
    local elapsed = (now - s_at) * 1000
    if elapsed < 0 then elapsed = 0 end
    debt = s_debt - elapsed
    if debt < 0 then debt = 0 end
    if debt > 0 and (s_limit ~= limit or s_period ~= period) then
      debt = math.floor(debt / math.floor(s_period / s_limit) * interval)
    end
  end
  local new_debt = debt + interval * cost
  if new_debt <= interval * limit then
    if spend then
      redis.call('SET', key, struct.pack('<dddd', new_debt, now, limit, period),
        'PX', math.floor(new_debt / 1000000) + 1)
    end
    out[#out + 1] = 1
    out[#out + 1] = debt
  else
    out[#out + 1] = 0
    out[#out + 1] = debt
    return out
  end
end
return out
";

/// Limits decided in Redis for every node, or in this node while Redis cannot answer.
pub struct RedisLimiter {
    redis: Arc<Redis>,
    script: Script,
    fallback: InProcessLimiter,
}

impl RedisLimiter {
    #[must_use]
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis, script: Script::new(GCRA), fallback: InProcessLimiter::default() }
    }

    /// One script call for `checks`, all under one hash tag.
    async fn call(
        &self,
        tag: Option<AccountId>,
        checks: &[(LimitKey, Quota)],
        cost: u32,
        spend: bool,
    ) -> Result<Spent, RedisError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(cost).arg(u8::from(spend));
        for (key, quota) in checks {
            invocation.key(redis_key(tag, key)).arg(quota.limit).arg(quota.period_ns);
        }
        let reply: Vec<u64> = self.redis.invoke(&invocation).await?;
        let Some((&now_us, pairs)) =
            reply.split_first().filter(|(_, p)| p.len() % 2 == 0 && (2..=checks.len() * 2).contains(&p.len()))
        else {
            let e = RedisError::Reply(format!("{} values for {} limits", reply.len(), checks.len()));
            self.redis.failed(&e);
            return Err(e);
        };
        let now_ns = now_us.saturating_mul(1_000);
        let mut decisions = Vec::with_capacity(pairs.len() / 2);
        for (pair, (_, quota)) in pairs.chunks_exact(2).zip(checks) {
            let decision = gcra::check(*quota, now_ns.saturating_add(pair[1]), now_ns, cost);
            if decision.allowed != (pair[0] == 1) {
                let e = RedisError::Reply(format!("the script and gcra::check disagree on {quota:?}"));
                self.redis.failed(&e);
                return Err(e);
            }
            decisions.push(decision);
        }
        Ok(Spent { now_ns, decisions })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn spend(&self, checks: &[(LimitKey, Quota)], cost: u32) -> Result<Spent, LimiterError> {
        if !self.redis.up() || checks.is_empty() {
            return Ok(self.fallback.spend_now(checks, cost));
        }
        let result = match hash_tag(checks) {
            Some(tag) => self.call(tag, checks, cost, true).await,
            // Limits in different hash slots (the sign-in throttle's three): one call each, in
            // order, stopping where the script would.
            None => {
                let mut all = Spent { now_ns: 0, decisions: Vec::with_capacity(checks.len()) };
                let mut result = Ok(());
                for check in checks {
                    match self.call(None, std::slice::from_ref(check), cost, true).await {
                        Ok(spent) => {
                            all.now_ns = spent.now_ns;
                            all.decisions.extend(spent.decisions);
                            if all.decisions.last().is_some_and(|d| !d.allowed) {
                                break;
                            }
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                result.map(|()| all)
            }
        };
        Ok(result.unwrap_or_else(|_| self.fallback.spend_now(checks, cost)))
    }

    async fn peek(&self, key: &LimitKey, quota: Quota, cost: u32) -> Result<(Decision, u64), LimiterError> {
        if self.redis.up() {
            let check = [(key.clone(), quota)];
            if let Ok(Spent { now_ns, decisions }) = self.call(own_tag(key), &check, cost, false).await
                && let Some(decision) = decisions.first()
            {
                return Ok((*decision, now_ns));
            }
        }
        self.fallback.peek(key, quota, cost).await
    }

    fn shared(&self) -> bool {
        self.redis.up()
    }
}

/// The account all of `checks` belong to, when one of them names it; `Some(None)` for a single
/// check of no account (tagged by itself); `None` when several checks have no common account.
fn hash_tag(checks: &[(LimitKey, Quota)]) -> Option<Option<AccountId>> {
    let account = checks.iter().find_map(|(key, _)| own_tag(key));
    match (account, checks) {
        (Some(a), _) => Some(Some(a)),
        (None, [only]) => Some(own_tag(&only.0)),
        (None, _) => None,
    }
}

/// The account a single limiter belongs to, if any.
fn own_tag(key: &LimitKey) -> Option<AccountId> {
    match key {
        LimitKey::Account(a) | LimitKey::RouteIp(a, ..) => Some(*a),
        _ => None,
    }
}

/// The Redis key of a limiter: `kg:{<account>}:<name>` under an account's hash tag, else
/// `kg:{<name>}`.
fn redis_key(tag: Option<AccountId>, key: &LimitKey) -> String {
    let mut name = String::with_capacity(64);
    let _ = match key {
        LimitKey::Key(id) => write!(name, "key:{id}"),
        LimitKey::Account(id) => write!(name, "account:{id}"),
        LimitKey::RouteIp(_, route, ip) => write!(name, "ip:{ip}:{route}"),
        LimitKey::FailedAuth(ip) => write!(name, "failed:{ip}"),
        LimitKey::FailedSignInIp(ip) => write!(name, "sign-in:{ip}"),
        LimitKey::FailedSignInEmail(digest) => write!(name, "sign-in-email:{digest:032x}"),
        LimitKey::FailedSignInEmailFrom(digest, ip) => write!(name, "sign-in-email:{digest:032x}:{ip}"),
        LimitKey::User(id) => write!(name, "user:{id}"),
    };
    match tag {
        Some(account) => format!("kg:{{{account}}}:{name}"),
        None => format!("kg:{{{name}}}"),
    }
}

#[cfg(test)]
mod tests {
    use keygate_domain::KeyId;

    use super::*;

    #[test]
    fn one_requests_limits_share_its_accounts_hash_tag() {
        let account = AccountId::generate();
        let key = KeyId::generate();
        let checks = [
            (LimitKey::Key(key), Quota::per_minute(10)),
            (LimitKey::RouteIp(account, "/v1/sms/{id}".into(), [203, 0, 113, 7].into()), Quota::per_minute(5)),
            (LimitKey::Account(account), Quota::per_minute(100)),
        ];
        let tag = hash_tag(&checks).expect("one tag");
        let keys: Vec<String> = checks.iter().map(|(k, _)| redis_key(tag, k)).collect();
        assert_eq!(
            keys,
            [
                format!("kg:{{{account}}}:key:{key}"),
                format!("kg:{{{account}}}:ip:203.0.113.7:/v1/sms/{{id}}"),
                format!("kg:{{{account}}}:account:{account}"),
            ]
        );
        let alone = [(LimitKey::FailedAuth([192, 0, 2, 1].into()), Quota::per_minute(5))];
        assert_eq!(redis_key(hash_tag(&alone).expect("its own"), &alone[0].0), "kg:{failed:192.0.2.1}");
        let apart = [alone[0].clone(), (LimitKey::FailedAuth([192, 0, 2, 2].into()), Quota::per_minute(5))];
        assert_eq!(hash_tag(&apart), None, "no common tag: one call each");
    }
}
