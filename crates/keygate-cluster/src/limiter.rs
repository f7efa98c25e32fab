//! [`RedisLimiter`]: every limit of a request decided in Redis, in one script call (SPEC §5).
//!
//! The script is GCRA, as `keygate_domain::gcra`, over the state `"<TAT> <limit> <period>"` kept
//! under one Redis key per limiter, in microseconds (Lua numbers are doubles: microseconds since
//! the epoch stay exact, nanoseconds would not). Time is Redis's own (`TIME`), so the nodes'
//! clocks do not matter. A limiter stored under another limit is rescaled first, so a changed
//! limit applies to the very next request (SPEC §5). Each limiter expires once it is full again:
//! an idle key leaves nothing behind.
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
use keygate_domain::gcra::{Decision, Quota};
use keygate_engine::ratelimit::{InProcessLimiter, LimitKey, LimiterError, RateLimiter, Spent};
use redis::Script;

use crate::redis::{Redis, RedisError};

/// KEYS: the limiters, in order. ARGV[1]: cost; ARGV[2]: 1 to spend, 0 to look only; then for
/// each limiter its limit and period (µs). Replies `{now, allowed₁, tat₁, allowed₂, tat₂, …}`,
/// stopping after the first refusal: `tat` is the new TAT when admitted, the current one (after
/// any rescaling) when refused.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local spend = ARGV[2] == '1'
local out = {now}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  local interval = math.floor(period / limit)
  local tat = now
  local state = redis.call('GET', key)
  if state then
    local s_tat, s_limit, s_period = string.match(state, '^(%d+) (%d+) (%d+)$')
    s_tat = tonumber(s_tat)
    if s_tat and s_tat > now then
      s_limit = tonumber(s_limit)
      s_period = tonumber(s_period)
      if s_limit ~= limit or s_period ~= period then
        s_tat = now + math.floor((s_tat - now) * interval / math.floor(s_period / s_limit))
      end
      tat = s_tat
    end
  end
  local new_tat = tat + interval * cost
  if new_tat - period <= now then
    if spend then
      redis.call('SET', key, string.format('%d %d %d', new_tat, limit, period),
        'PX', math.floor((new_tat - now) / 1000) + 1)
    end
    out[#out + 1] = 1
    out[#out + 1] = new_tat
  else
    out[#out + 1] = 0
    out[#out + 1] = tat
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
            invocation.key(redis_key(tag, key)).arg(quota.limit).arg(quota.period_ns / 1_000);
        }
        let reply: Vec<u64> = self.redis.invoke(&invocation).await?;
        let Some((&now_us, pairs)) =
            reply.split_first().filter(|(_, p)| p.len() % 2 == 0 && (2..=checks.len() * 2).contains(&p.len()))
        else {
            let e = RedisError::Reply(format!("{} values for {} limits", reply.len(), checks.len()));
            self.redis.failed(&e);
            return Err(e);
        };
        let decisions = pairs
            .chunks_exact(2)
            .zip(checks)
            .map(|(pair, (_, quota))| decision(*quota, now_us, pair[0] == 1, pair[1], cost))
            .collect();
        Ok(Spent { now_ns: now_us * 1_000, decisions })
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
            // Limits in different hash slots: one call each, in order, as the script would.
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
    let account = checks.iter().find_map(|(key, _)| match key {
        LimitKey::Account(a) | LimitKey::RouteIp(a, ..) => Some(*a),
        _ => None,
    });
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

/// The decision the script made, in the engine's terms (nanoseconds), with the script's own
/// microsecond arithmetic so that `Retry-After` is never earlier than Redis would admit.
fn decision(quota: Quota, now_us: u64, allowed: bool, tat_us: u64, cost: u32) -> Decision {
    let period = quota.period_ns / 1_000;
    let interval = (period / u64::from(quota.limit.max(1))).max(1);
    let ahead = tat_us.saturating_sub(now_us);
    let remaining = u32::try_from(period.saturating_sub(ahead) / interval).unwrap_or(u32::MAX).min(quota.limit);
    let retry_after =
        if allowed { 0 } else { (tat_us + interval * u64::from(cost)).saturating_sub(period).saturating_sub(now_us) };
    Decision {
        allowed,
        remaining,
        reset_after_ns: ahead * 1_000,
        retry_after_ns: retry_after * 1_000,
        tat_ns: tat_us * 1_000,
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

    #[test]
    fn a_refusal_waits_exactly_until_the_script_would_admit() {
        let q = Quota::per_minute(60); // one a second
        let now = 1_800_000_000_000_000;
        // Sixty spent at once: the TAT is a minute ahead; the next one is admitted a second later.
        let refused = decision(q, now, false, now + 60_000_000, 1);
        assert_eq!(
            (refused.remaining, refused.retry_after_ns, refused.reset_after_ns),
            (0, 1_000_000_000, 60_000_000_000)
        );
        let admitted = decision(q, now, true, now + 1_000_000, 1);
        assert_eq!((admitted.remaining, admitted.retry_after_ns), (59, 0));
    }
}
