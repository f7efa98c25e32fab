//! The request log's storage form (SPEC §8), the same on both backends: records are kept in
//! **chunks**, one row of `request_log_chunks` per account and time bucket ([`BUCKET_CHARS`]) per
//! written batch, each holding up to [`MAX_CHUNK_RECORDS`] records as one JSON array.
//!
//! Why chunks: a row per record with indexes on account and key dirtied a different index page
//! for nearly every record once many keys were active, and each commit wrote every dirtied page
//! whole (about 23 KiB of WAL a record on SQLite with 1,000 active keys; docs/benchmarks.md). A
//! chunk row is appended at the end of the table (its `seq` only grows) and adds one entry to one
//! index, `(account_id, last_id, seq)` (and one to `last_id`, for retention), so a batch of 1,000
//! records costs one row per active account, and retention deletes whole chunks, not records one
//! by one.
//!
//! A record is the JSON array `[id, request_id, at, key_id, tenant_id, route, method, status,
//! outcome, client_ip, latency_us, via_key_id]`: `at` in seconds since the Unix epoch (keygate's
//! timestamps are whole seconds), absent values `null`; the account is the chunk's. The array
//! keeps a chunk readable with SQL (`json_each`, `json_array_elements`), and lets migrations
//! carry rows over in SQL.
//!
//! Listing (newest first by record id) reads an account's chunks by `last_id` descending and
//! filters the decoded records; the cursor and `since` bound the index seek, since a chunk holds
//! one time bucket and a record's id is made after its `at`. Chunks written by different nodes can
//! overlap in id range, so a record is only handed out once every chunk that could hold a newer
//! one has been read: [`Listing`] does that bookkeeping.

use std::net::IpAddr;

use chrono::DateTime;
use keygate_domain::ip::IpText;
use keygate_domain::{AccountId, KeyId, TenantId};

use super::rows::{corrupt, parse};
use crate::{RequestFilter, RequestRecord, StoreError};

/// Records per chunk at most: a flush of a busy account is split, so no row grows without bound
/// (1,000 records are about 250 KB of JSON).
pub(super) const MAX_CHUNK_RECORDS: usize = 1_000;

/// One `request_log_chunks` row to insert.
pub(super) struct Chunk {
    pub account_id: String,
    /// The smallest and largest record id in the chunk.
    pub first_id: String,
    pub last_id: String,
    /// The earliest and latest `at`, in seconds since the Unix epoch.
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    /// The records, a JSON array of arrays (module docs).
    pub records: String,
}

/// Characters of a record id that name its time bucket: `rl_` and the first 6 of the ULID's 10
/// time characters, so one bucket is 2^20 ms (about 17.5 minutes). Every record of a chunk is of
/// one bucket, which bounds what a chunk spans (retention keeps a record at most one bucket past
/// its time) and lets a listing seek by id ([`id_bucket_end`]).
const BUCKET_CHARS: usize = 9;

/// The bucket part of a record id (the whole id if it is shorter).
fn bucket(id: &str) -> &str {
    id.get(..BUCKET_CHARS).unwrap_or(id)
}

/// A string above every record id of `id`'s bucket and below every id of a later bucket: the
/// bucket followed by `~`, which sorts after every character of a ULID.
pub(super) fn id_bucket_end(id: &str) -> String {
    format!("{}~", bucket(id))
}

/// Groups `records` by account and time bucket into chunks of at most [`MAX_CHUNK_RECORDS`].
pub(super) fn chunks(records: &[RequestRecord]) -> Result<Vec<Chunk>, StoreError> {
    let mut sorted: Vec<&RequestRecord> = records.iter().collect();
    sorted.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id).then_with(|| bucket(&a.id).cmp(bucket(&b.id))));
    let mut out = Vec::new();
    for group in sorted.chunk_by(|a, b| a.account_id == b.account_id && bucket(&a.id) == bucket(&b.id)) {
        for part in group.chunks(MAX_CHUNK_RECORDS) {
            out.push(encode(part)?);
        }
    }
    Ok(out)
}

/// Appends `r` to a chunk's JSON as the module docs' array. Written field by field, as
/// `serde_json` writes the same tuple (a test compares the two): strings through its escaping;
/// ids, addresses and numbers, which need none, from their own text on the stack. A record is
/// written for nearly every request, so its encoding is part of the data plane's cost.
fn push_record(json: &mut Vec<u8>, r: &RequestRecord) -> Result<(), StoreError> {
    fn string(json: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
        serde_json::to_writer(json, s).map_err(|e| StoreError::Corrupt(format!("request record: {e}")))
    }
    fn id(json: &mut Vec<u8>, text: Option<&str>) {
        match text {
            Some(text) => {
                json.push(b'"');
                json.extend_from_slice(text.as_bytes());
                json.push(b'"');
            }
            None => json.extend_from_slice(b"null"),
        }
    }
    let mut numbers = itoa::Buffer::new();
    let (mut key, mut tenant, mut via) = ([0; KeyId::TEXT_LEN], [0; TenantId::TEXT_LEN], [0; KeyId::TEXT_LEN]);
    json.push(b'[');
    string(json, &r.id)?;
    json.push(b',');
    string(json, &r.request_id)?;
    json.push(b',');
    json.extend_from_slice(numbers.format(r.at.timestamp()).as_bytes());
    json.push(b',');
    id(json, r.key_id.as_ref().map(|k| k.encode(&mut key)));
    json.push(b',');
    id(json, r.tenant_id.as_ref().map(|t| t.encode(&mut tenant)));
    json.push(b',');
    string(json, &r.route)?;
    json.push(b',');
    string(json, &r.method)?;
    json.push(b',');
    json.extend_from_slice(numbers.format(r.status).as_bytes());
    json.push(b',');
    string(json, &r.outcome)?;
    json.push(b',');
    match r.client_ip {
        Some(ip) => {
            use std::io::Write as _;
            json.push(b'"');
            write!(json, "{}", IpText(ip)).map_err(|e| StoreError::Corrupt(format!("request record: {e}")))?;
            json.push(b'"');
        }
        None => json.extend_from_slice(b"null"),
    }
    json.push(b',');
    json.extend_from_slice(numbers.format(r.latency_us).as_bytes());
    json.push(b',');
    id(json, r.via_key_id.as_ref().map(|k| k.encode(&mut via)));
    json.push(b']');
    Ok(())
}

/// One chunk of `records`: at least one, all of one account.
fn encode(records: &[&RequestRecord]) -> Result<Chunk, StoreError> {
    let Some(first) = records.first() else {
        return Err(StoreError::Corrupt("an empty request-log chunk".into()));
    };
    let mut json = Vec::with_capacity(records.len() * 200);
    json.push(b'[');
    let (mut first_id, mut last_id) = (&first.id, &first.id);
    let (mut first_at, mut last_at) = (i64::MAX, i64::MIN);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        first_id = first_id.min(&r.id);
        last_id = last_id.max(&r.id);
        let at = r.at.timestamp();
        first_at = first_at.min(at);
        last_at = last_at.max(at);
        push_record(&mut json, r)?;
    }
    json.push(b']');
    let records_json = String::from_utf8(json).map_err(|e| StoreError::Corrupt(format!("request record: {e}")))?;
    Ok(Chunk {
        account_id: first.account_id.to_string(),
        first_id: first_id.clone(),
        last_id: last_id.clone(),
        first_at,
        last_at,
        count: i64::try_from(records.len()).unwrap_or(i64::MAX),
        records: records_json,
    })
}

/// A record as stored (module docs), before its ids are parsed.
type Stored = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    u16,
    String,
    Option<String>,
    u64,
    Option<String>,
);

/// The records of one chunk of `account`.
pub(super) fn decode(account: AccountId, json: &str) -> Result<Vec<RequestRecord>, StoreError> {
    let stored: Vec<Stored> =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("request_log_chunks.records: {e}")))?;
    stored
        .into_iter()
        .map(|(id, request_id, at, key_id, tenant_id, route, method, status, outcome, client_ip, latency_us, via)| {
            Ok(RequestRecord {
                at: DateTime::from_timestamp(at, 0)
                    .ok_or_else(|| corrupt("request_log_chunks.records at", &at.to_string()))?,
                key_id: key_id.map(|k| parse("request_log_chunks.records key_id", &k)).transpose()?,
                tenant_id: tenant_id.map(|t| parse("request_log_chunks.records tenant_id", &t)).transpose()?,
                client_ip: client_ip
                    .map(|ip| parse::<IpAddr>("request_log_chunks.records client_ip", &ip))
                    .transpose()?,
                via_key_id: via.map(|k| parse("request_log_chunks.records via_key_id", &k)).transpose()?,
                id,
                request_id,
                account_id: account,
                route,
                method,
                status,
                outcome,
                latency_us,
            })
        })
        .collect()
}

/// Whether `record` is one `filter` asks for, below the page's cursor `before`.
fn wanted(record: &RequestRecord, filter: &RequestFilter, before: Option<&str>) -> bool {
    before.is_none_or(|b| record.id.as_str() < b)
        && filter.key_id.is_none_or(|k| record.key_id == Some(k))
        && filter.status.is_none_or(|s| record.status == s)
        && filter.since.is_none_or(|t| record.at >= t)
        && filter.until.is_none_or(|t| record.at < t)
}

/// One page of a listing, assembled from chunks read newest `last_id` first.
pub(super) struct Listing<'a> {
    filter: &'a RequestFilter,
    before: Option<&'a str>,
    limit: usize,
    /// The filter's key id as it is written in a chunk.
    key_text: Option<String>,
    found: Vec<RequestRecord>,
}

impl<'a> Listing<'a> {
    pub(super) fn new(filter: &'a RequestFilter, before: Option<&'a str>, limit: u32) -> Self {
        let key_text = filter.key_id.map(|k| format!("\"{k}\""));
        Self { filter, before, limit: limit as usize, key_text, found: Vec::new() }
    }

    /// Takes the wanted records of one chunk. A listing by key skips, undecoded, a chunk whose
    /// text does not mention the key (a substring search, far cheaper than parsing): a filtered
    /// listing scans the account's chunks, and most hold none of one key's records.
    pub(super) fn add(&mut self, account: AccountId, json: &str) -> Result<(), StoreError> {
        if let Some(key) = &self.key_text
            && !json.contains(key.as_str())
        {
            return Ok(());
        }
        self.extend(decode(account, json)?);
        Ok(())
    }

    /// Takes the wanted ones of `records`.
    pub(super) fn extend(&mut self, records: Vec<RequestRecord>) {
        self.found.extend(records.into_iter().filter(|r| wanted(r, self.filter, self.before)));
    }

    /// The page, if it is complete: `unread_below` is the `last_id` of the last chunk read when
    /// more chunks may follow (none of them holds a record above it), `None` when every chunk has
    /// been read.
    pub(super) fn finish(&mut self, unread_below: Option<&str>) -> Option<Vec<RequestRecord>> {
        self.found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        // A batch the flusher wrote again after a commit whose answer was lost: once is enough.
        self.found.dedup_by(|a, b| a.id == b.id);
        let settled = match unread_below {
            None => self.found.len(),
            Some(below) => self.found.partition_point(|r| r.id.as_str() >= below),
        };
        if unread_below.is_some() && settled < self.limit {
            return None;
        }
        let mut page = std::mem::take(&mut self.found);
        page.truncate(self.limit.min(settled));
        Some(page)
    }

    /// The records read so far that are at or above `below` (every chunk that may hold one has
    /// been read), for a listing that stops there: call after [`Listing::finish`] with the same
    /// `below` returned `None`.
    pub(super) fn settled(&mut self, below: &str) -> Vec<RequestRecord> {
        let mut page = std::mem::take(&mut self.found);
        page.truncate(page.partition_point(|r| r.id.as_str() >= below));
        page
    }
}

#[cfg(test)]
mod tests {
    use keygate_domain::{KeyId, TenantId};

    use super::*;

    /// A record id of one bucket (`rl_01JD0000`), ending in `n`.
    fn id(n: u32) -> String {
        format!("rl_01JD000000{n:016}")
    }

    fn record(account: AccountId, id: &str, key: Option<KeyId>) -> RequestRecord {
        RequestRecord {
            id: id.to_owned(),
            request_id: "req \"quoted\" \u{1F600}".to_owned(),
            at: DateTime::from_timestamp(1_780_000_000, 0).expect("test value"),
            account_id: account,
            key_id: key,
            tenant_id: Some(TenantId::generate()),
            route: "/v1/api-keys/{id}".to_owned(),
            method: "GET".to_owned(),
            status: 429,
            outcome: "rate_limited".to_owned(),
            client_ip: Some("2001:db8::1".parse().expect("test value")),
            latency_us: 1234,
            via_key_id: None,
        }
    }

    /// The hand-written encoding is what `serde_json` writes for the same tuple, byte for byte:
    /// escapes, both address families, absent values.
    #[test]
    fn a_record_is_written_as_serde_json_writes_its_tuple() {
        struct Shown<T>(T);
        impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }
        let account = AccountId::generate();
        let mut records = vec![record(account, &id(1), Some(KeyId::generate())), record(account, &id(2), None)];
        records[1].client_ip = Some("203.0.113.250".parse().expect("test value"));
        records[1].tenant_id = None;
        records[1].via_key_id = Some(KeyId::generate());
        records[1].route = "/v1/x\n\u{7}\\".to_owned();
        let mut third = record(account, &id(3), None);
        third.client_ip = None;
        records.push(third);
        for r in &records {
            let tuple = (
                &r.id,
                &r.request_id,
                r.at.timestamp(),
                r.key_id.map(Shown),
                r.tenant_id.map(Shown),
                &r.route,
                &r.method,
                r.status,
                &r.outcome,
                r.client_ip.map(Shown),
                r.latency_us,
                r.via_key_id.map(Shown),
            );
            let mut ours = Vec::new();
            push_record(&mut ours, r).expect("encodes");
            assert_eq!(String::from_utf8(ours), String::from_utf8(serde_json::to_vec(&tuple).expect("serializes")));
        }
    }

    #[test]
    fn a_chunk_decodes_to_the_records_it_was_made_of() {
        let (a, b) = (AccountId::generate(), AccountId::generate());
        let records = vec![
            record(a, &id(1), Some(KeyId::generate())),
            record(b, &id(2), None),
            record(a, &id(3), Some(KeyId::generate())),
        ];
        let chunks = chunks(&records).expect("test value");
        assert_eq!(chunks.len(), 2, "one chunk per account");
        let first = chunks.iter().position(|c| c.account_id == a.to_string()).expect("a's chunk");
        let (chunk_a, chunk_b) = (&chunks[first], &chunks[1 - first]);
        assert_eq!((chunk_a.first_id.clone(), chunk_a.last_id.clone(), chunk_a.count), (id(1), id(3), 2));
        assert_eq!((chunk_a.first_at, chunk_a.last_at), (1_780_000_000, 1_780_000_000));
        assert_eq!(decode(a, &chunk_a.records).expect("test value"), vec![records[0].clone(), records[2].clone()]);
        assert_eq!(decode(b, &chunk_b.records).expect("test value"), vec![records[1].clone()]);
    }

    #[test]
    fn a_busy_account_is_split_into_bounded_chunks() {
        let a = AccountId::generate();
        let records: Vec<_> = (0..2_500).map(|i| record(a, &id(i), None)).collect();
        let counts: Vec<i64> = chunks(&records).expect("test value").iter().map(|c| c.count).collect();
        assert_eq!(counts, vec![1_000, 1_000, 500]);
    }

    #[test]
    fn a_page_waits_for_chunks_that_may_hold_newer_records() {
        let a = AccountId::generate();
        let filter = RequestFilter::default();
        let node_1 = chunks(&[record(a, &id(5), None), record(a, &id(9), None)]).expect("test value");
        let node_2 = chunks(&[record(a, &id(7), None), record(a, &id(8), None)]).expect("test value");
        let mut listing = Listing::new(&filter, None, 2);
        listing.add(a, &node_1[0].records).expect("test value");
        // Unread chunks end at or below id 9: only id 9 is settled, one short of the page.
        assert!(listing.finish(Some(&id(9))).is_none());
        listing.add(a, &node_2[0].records).expect("test value");
        let page = listing.finish(None).expect("test value");
        assert_eq!(page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [id(9), id(8)]);
    }

    #[test]
    fn a_listing_filters_and_honours_the_cursor() {
        let a = AccountId::generate();
        let key = KeyId::generate();
        let mut records: Vec<_> = (0..6).map(|i| record(a, &id(i), None)).collect();
        records[1].key_id = Some(key);
        records[4].key_id = Some(key);
        let chunk = chunks(&records).expect("test value").remove(0);
        let filter = RequestFilter { key_id: Some(key), ..RequestFilter::default() };
        let cursor = id(4);
        let mut listing = Listing::new(&filter, Some(&cursor), 10);
        listing.add(a, &chunk.records).expect("test value");
        let page = listing.finish(None).expect("test value");
        assert_eq!(page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [id(1)]);
        // A chunk that does not name the key is skipped, also when its text could not be decoded.
        let mut listing = Listing::new(&filter, None, 10);
        listing.add(a, "not JSON at all").expect("skipped undecoded");
    }

    #[test]
    fn a_chunk_holds_one_time_bucket() {
        let a = AccountId::generate();
        // 2^20 ms apart: the sixth time character of the ULID differs.
        let (early, late) = ("rl_01JD0000000000000000000001", "rl_01JD0100000000000000000001");
        let chunks = chunks(&[record(a, late, None), record(a, early, None)]).expect("test value");
        let mut spans: Vec<_> = chunks.iter().map(|c| (c.first_id.as_str(), c.last_id.as_str())).collect();
        spans.sort_unstable();
        assert_eq!(spans, [(early, early), (late, late)]);
        // The bucket's end is above each id of the bucket and below every later one.
        let end = id_bucket_end(early);
        assert!(early < end.as_str() && "rl_01JD00ZZZZZZZZZZZZZZZZZZZZ" < end.as_str() && end.as_str() < late);
    }

    #[test]
    fn garbage_in_a_chunk_is_corrupt_not_a_panic() {
        let a = AccountId::generate();
        for bad in ["", "[", "[[1]]", r#"[["rl_1","r",0,"not-a-key",null,"/","GET",200,"ok",null,1,null]]"#] {
            assert!(matches!(decode(a, bad), Err(StoreError::Corrupt(_))), "{bad}");
        }
    }
}
