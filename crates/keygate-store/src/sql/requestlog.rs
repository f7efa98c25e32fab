//! The request log's storage form (SPEC §8), the same on both backends: records are kept in
//! **chunks**, one row of `request_log_chunks` per [`RequestChunk`] (`chunk.rs` builds them):
//! records of one account and one time bucket (about 17.5 minutes: `RecordId::bucket`), up to
//! [`MAX_CHUNK_RECORDS`](crate::MAX_CHUNK_RECORDS) of them.
//!
//! Why chunks: a row per record with indexes on account and key dirtied a different index page
//! for nearly every record once many keys were active, and each commit wrote every dirtied page
//! whole (about 23 KiB of WAL a record on SQLite with 1,000 active keys; docs/benchmarks.md). A
//! chunk row is appended at the end of the table (its `seq` only grows) and adds one entry to one
//! index, `(account_id, last_id, seq)` (and one to `last_id`, for retention), so a chunk of a
//! hundred records costs one row, and retention deletes whole chunks, not records one by one.
//!
//! **The packed form** (chunks written since migration 0009). The bytes written are most of what
//! a record costs the database (about 3.7 ns a byte on SQLite: the WAL, then the checkpoint; one
//! system call a page each way), so a record is stored small:
//!
//! - `strings`: the text that repeats from record to record (key and tenant ids, route, method,
//!   outcome), each once, as a JSON array of strings;
//! - `packed`: the records, one after another, each a [`Packed`] in postcard's encoding (varint
//!   integers, no field names; <https://postcard.jamesmunns.com/wire-format>): the record id's
//!   ULID as 16 bytes, the request id as a ULID when keygate made it (`req_<ULID>`, 16 bytes) and
//!   as text otherwise, `at` as the seconds between it and the id's time, repeated text as its
//!   index in `strings`, the client's address as 4 or 16 bytes.
//!
//! About 52 bytes a record (57 with its share of the strings at a hundred records a chunk),
//! against 215 for the JSON array of text that chunks held before; the account is the chunk's. `strings` stays readable with SQL, so a search by key can skip chunks
//! that do not name it without decoding them.
//!
//! **The older form.** Chunks written before migration 0009 have `packed` and `strings` `NULL`
//! and their records in `records`, a JSON array of arrays `[id, request_id, at, key_id,
//! tenant_id, route, method, status, outcome, client_ip, latency_us, via_key_id]` (`at` in
//! seconds since the Unix epoch, absent values `null`). A chunk written since has `records` `[]`,
//! so a node of an earlier version, which reads only `records`, finds no records in it rather than
//! bytes it cannot read (docs/deployment.md). Both forms are read.
//!
//! Listing (newest first by record id) reads an account's chunks by `last_id` descending and
//! filters the decoded records; the cursor and `since` bound the index seek, since a chunk holds
//! one time bucket and a record's id is made after its `at`. Chunks written by different nodes can
//! overlap in id range, so a record is only handed out once every chunk that could hold a newer
//! one has been read: [`Listing`] does that bookkeeping.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::DateTime;
use keygate_domain::{AccountId, RequestId};
use ulid::Ulid;

use super::rows::{corrupt, parse};
use crate::chunk::{Packed, RecordId, RequestChunk, RequestIdForm, RequestRecord};
use crate::{RequestFilter, StoreError};

/// The bucket part of a record id's text (the whole text if it is shorter): as
/// [`RecordId::bucket`], for the ids of a listing's cursor.
fn text_bucket(id: &str) -> &str {
    id.get(..RequestRecord::ID_PREFIX.len() + 6).unwrap_or(id)
}

/// A string above every record id of `id`'s bucket and below every id of a later bucket: the
/// bucket followed by `~`, which sorts after every character of a ULID.
pub(super) fn id_bucket_end(id: &str) -> String {
    format!("{}~", text_bucket(id))
}

/// One `request_log_chunks` row to insert, borrowed from its chunk.
pub(super) struct Row<'a> {
    pub account_id: String,
    pub first_id: String,
    pub last_id: String,
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub packed: &'a [u8],
    pub strings: &'a str,
}

/// The row that stores the chunk; `None` for an empty one, which stores nothing.
pub(super) fn row(chunk: &RequestChunk) -> Result<Option<Row<'_>>, StoreError> {
    if chunk.count == 0 {
        return Ok(None);
    }
    let strings =
        std::str::from_utf8(&chunk.strings).map_err(|e| StoreError::Corrupt(format!("request-log strings: {e}")))?;
    Ok(Some(Row {
        account_id: chunk.account.to_string(),
        first_id: chunk.first_id.to_string(),
        last_id: chunk.last_id.to_string(),
        first_at: chunk.first_at,
        last_at: chunk.last_at,
        count: i64::try_from(chunk.count).unwrap_or(i64::MAX),
        packed: &chunk.records,
        strings,
    }))
}

/// The records of one chunk of `account` in the packed form: its `packed` and `strings` columns.
pub(super) fn decode_packed(
    account: AccountId,
    mut packed: &[u8],
    strings: &str,
) -> Result<Vec<RequestRecord>, StoreError> {
    let strings: Vec<String> =
        serde_json::from_str(strings).map_err(|e| StoreError::Corrupt(format!("request_log_chunks.strings: {e}")))?;
    let text = |n: u32| -> Result<String, StoreError> {
        strings
            .get(n as usize)
            .cloned()
            .ok_or_else(|| corrupt("request_log_chunks.packed string index", &n.to_string()))
    };
    fn id<T: FromStr>(
        what: &str,
        n: Option<u32>,
        text: impl Fn(u32) -> Result<String, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        n.map(|n| text(n).and_then(|s| parse(what, &s))).transpose()
    }
    let mut records = Vec::new();
    while !packed.is_empty() {
        let (p, rest): (Packed<'_>, &[u8]) = postcard::take_from_bytes(packed)
            .map_err(|e| StoreError::Corrupt(format!("request_log_chunks.packed: {e}")))?;
        packed = rest;
        let record_id = RecordId(Ulid::from_bytes(p.id));
        let at = record_id.seconds().checked_sub(p.at_before_id);
        records.push(RequestRecord {
            id: record_id.to_string(),
            request_id: match p.request_id {
                RequestIdForm::Made(ulid) => format!("{}_{}", RequestId::PREFIX, Ulid::from_bytes(ulid)),
                RequestIdForm::Sent(text) => text.to_owned(),
            },
            at: at
                .and_then(|at| DateTime::from_timestamp(at, 0))
                .ok_or_else(|| corrupt("request_log_chunks.packed at", &p.at_before_id.to_string()))?,
            account_id: account,
            key_id: id("request_log_chunks.packed key_id", p.key_id, text)?,
            tenant_id: id("request_log_chunks.packed tenant_id", p.tenant_id, text)?,
            route: text(p.route)?,
            method: text(p.method)?,
            status: p.status,
            outcome: text(p.outcome)?,
            client_ip: p.client_ip,
            latency_us: p.latency_us,
            via_key_id: id("request_log_chunks.packed via_key_id", p.via_key_id, text)?,
        });
    }
    Ok(records)
}

/// A record in the older form (module docs), before its ids are parsed.
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

/// The records of one chunk of `account` in the older form: its `records` column.
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

/// One stored chunk as a listing reads it: the packed form or the older one.
pub(super) enum StoredChunk<'a> {
    Packed { packed: &'a [u8], strings: &'a str },
    Records(&'a str),
}

impl<'a> StoredChunk<'a> {
    /// The chunk a row's `records`, `packed` and `strings` columns hold (module docs).
    pub(super) fn from_columns(
        records: &'a str,
        packed: Option<&'a [u8]>,
        strings: Option<&'a str>,
    ) -> Result<Self, StoreError> {
        match (packed, strings) {
            (Some(packed), Some(strings)) => Ok(Self::Packed { packed, strings }),
            (None, None) => Ok(Self::Records(records)),
            _ => Err(StoreError::Corrupt("request_log_chunks: packed without strings".into())),
        }
    }
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
    /// text does not mention the key (a substring search of its strings, or of its records in the
    /// older form; far cheaper than decoding): a filtered listing scans the account's chunks, and
    /// most hold none of one key's records.
    pub(super) fn add(&mut self, account: AccountId, chunk: StoredChunk<'_>) -> Result<(), StoreError> {
        let text = match chunk {
            StoredChunk::Packed { strings, .. } => strings,
            StoredChunk::Records(json) => json,
        };
        if let Some(key) = &self.key_text
            && !text.contains(key.as_str())
        {
            return Ok(());
        }
        self.extend(match chunk {
            StoredChunk::Packed { packed, strings } => decode_packed(account, packed, strings)?,
            StoredChunk::Records(json) => decode(account, json)?,
        });
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
    use keygate_domain::{KeyId, RequestId, TenantId};

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

    fn group(records: &[RequestRecord]) -> Vec<RequestChunk> {
        RequestChunk::group(records).expect("record ids")
    }

    /// A chunk's two columns, as the store writes them.
    fn columns(chunk: &RequestChunk) -> (Vec<u8>, String) {
        let row = row(chunk).expect("text").expect("not empty");
        (row.packed.to_vec(), row.strings.to_owned())
    }

    fn decoded(chunk: &RequestChunk) -> Vec<RequestRecord> {
        let (packed, strings) = columns(chunk);
        decode_packed(chunk.account, &packed, &strings).expect("decodes")
    }

    fn add(listing: &mut Listing<'_>, account: AccountId, (packed, strings): &(Vec<u8>, String)) {
        listing.add(account, StoredChunk::Packed { packed, strings }).expect("test value");
    }

    /// Every field comes back as it went in: escapes, both address families, absent values,
    /// request ids keygate made and others, repeated text named once.
    #[test]
    fn a_chunk_decodes_to_the_records_it_was_made_of() {
        let (a, b) = (AccountId::generate(), AccountId::generate());
        let key = KeyId::generate();
        let mut records = vec![
            record(a, &id(1), Some(key)),
            record(b, &id(2), None),
            record(a, &id(3), Some(KeyId::generate())),
            record(a, &id(4), Some(key)),
        ];
        records[1].request_id = RequestId::generate().to_string();
        records[2].client_ip = Some("203.0.113.250".parse().expect("test value"));
        records[2].tenant_id = None;
        records[2].via_key_id = Some(key);
        records[2].route = "/v1/x\n\u{7}\\\"0".to_owned();
        records[2].request_id = "req_01jd0000000000000000000000".to_owned();
        records[3].client_ip = None;
        records[3].method = "0".to_owned();
        records[3].at = DateTime::from_timestamp(1_700_000_000, 0).expect("test value");
        let chunks = group(&records);
        assert_eq!(chunks.len(), 2, "one chunk per account");
        let first = chunks.iter().position(|c| c.account == a).expect("a's chunk");
        let (chunk_a, chunk_b) = (&chunks[first], &chunks[1 - first]);
        assert_eq!((chunk_a.first_id.to_string(), chunk_a.last_id.to_string(), chunk_a.len()), (id(1), id(4), 3));
        assert_eq!((chunk_a.first_at, chunk_a.last_at), (1_700_000_000, 1_780_000_000));
        assert_eq!(decoded(chunk_a), vec![records[0].clone(), records[2].clone(), records[3].clone()]);
        assert_eq!(decoded(chunk_b), vec![records[1].clone()]);
        // The key of two records (once as the asking key) is written once.
        let (_, strings) = columns(chunk_a);
        assert_eq!(strings.matches(&key.to_string()).count(), 1, "{strings}");
        let strings: Vec<String> = serde_json::from_str(&strings).expect("a JSON array of strings");
        assert_eq!(strings.iter().collect::<std::collections::HashSet<_>>().len(), strings.len(), "no text twice");
    }

    /// The packed form is small: what the request log costs is mostly its bytes.
    #[test]
    fn a_packed_record_is_a_quarter_of_the_older_form() {
        let a = AccountId::generate();
        let (key, tenant) = (KeyId::generate(), TenantId::generate());
        let records: Vec<_> = (0..100)
            .map(|n| RequestRecord {
                request_id: RequestId::generate().to_string(),
                tenant_id: Some(tenant),
                client_ip: Some(IpAddr::from([10, 0, 0, n])),
                ..record(a, &RecordId::generate().to_string(), Some(key))
            })
            .collect();
        let chunk = &group(&records)[0];
        let per_record = chunk.bytes() / records.len();
        assert!((40..=60).contains(&per_record), "{per_record} bytes a record");
    }

    /// A chunk written before migration 0009: every value in place, in `records`.
    #[test]
    fn a_chunk_of_the_older_form_still_decodes() {
        let a = AccountId::generate();
        let key = KeyId::generate();
        let json = format!(
            r#"[["{}","req_1",1780000000,"{key}",null,"/v1/verify","POST",200,"ok","10.0.0.1",12,null]]"#,
            id(1)
        );
        let records = decode(a, &json).expect("decodes");
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].key_id, records[0].route.as_str(), records[0].outcome.as_str()),
            (Some(key), "/v1/verify", "ok")
        );
        let filter = RequestFilter { key_id: Some(key), ..RequestFilter::default() };
        let mut listing = Listing::new(&filter, None, 10);
        listing.add(a, StoredChunk::Records(&json)).expect("decodes");
        assert_eq!(listing.finish(None).expect("complete").len(), 1);
    }

    #[test]
    fn a_busy_account_is_split_into_bounded_chunks() {
        let a = AccountId::generate();
        let records: Vec<_> = (0..2_500).map(|i| record(a, &id(i), None)).collect();
        let counts: Vec<usize> = group(&records).iter().map(RequestChunk::len).collect();
        assert_eq!(counts, vec![1_000, 1_000, 500]);
    }

    #[test]
    fn an_empty_chunk_stores_nothing_and_a_bad_id_is_refused() {
        let a = AccountId::generate();
        assert!(row(&RequestChunk::new(a)).expect("text").is_none());
        for bad in [
            "",
            "rl_",
            "rl_01jd0000000000000000000000",
            "key_01JD0000000000000000000000",
            "rl_81JD0000000000000000000000",
        ] {
            assert!(RequestChunk::group(&[record(a, bad, None)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_waits_for_chunks_that_may_hold_newer_records() {
        let a = AccountId::generate();
        let filter = RequestFilter::default();
        let node_1 = columns(&group(&[record(a, &id(5), None), record(a, &id(9), None)])[0]);
        let node_2 = columns(&group(&[record(a, &id(7), None), record(a, &id(8), None)])[0]);
        let mut listing = Listing::new(&filter, None, 2);
        add(&mut listing, a, &node_1);
        // Unread chunks end at or below id 9: only id 9 is settled, one short of the page.
        assert!(listing.finish(Some(&id(9))).is_none());
        add(&mut listing, a, &node_2);
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
        let chunk = columns(&group(&records)[0]);
        let filter = RequestFilter { key_id: Some(key), ..RequestFilter::default() };
        let cursor = id(4);
        let mut listing = Listing::new(&filter, Some(&cursor), 10);
        add(&mut listing, a, &chunk);
        let page = listing.finish(None).expect("test value");
        assert_eq!(page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [id(1)]);
        // A chunk that does not name the key is skipped, also when its text could not be decoded.
        let mut listing = Listing::new(&filter, None, 10);
        listing.add(a, StoredChunk::Records("not JSON at all")).expect("skipped undecoded");
        listing.add(a, StoredChunk::Packed { packed: b"\xff", strings: r#"["ten_x"]"# }).expect("skipped undecoded");
    }

    #[test]
    fn a_chunk_holds_one_time_bucket() {
        let a = AccountId::generate();
        // 2^20 ms apart: the sixth time character of the ULID differs.
        let (early, late) = ("rl_01JD0000000000000000000001", "rl_01JD0100000000000000000001");
        let chunks = group(&[record(a, late, None), record(a, early, None)]);
        let mut spans: Vec<_> = chunks.iter().map(|c| (c.first_id.to_string(), c.last_id.to_string())).collect();
        spans.sort_unstable();
        assert_eq!(spans, [(early.to_owned(), early.to_owned()), (late.to_owned(), late.to_owned())]);
        // The bucket's end is above each id of the bucket and below every later one.
        let end = id_bucket_end(early);
        assert!(early < end.as_str() && "rl_01JD00ZZZZZZZZZZZZZZZZZZZZ" < end.as_str() && end.as_str() < late);
    }

    #[test]
    fn garbage_in_a_chunk_is_corrupt_not_a_panic() {
        let a = AccountId::generate();
        let bad_records = ["", "[", "[[1]]", r#"[["rl_1","r",0,"not-a-key",null,"/","GET",200,"ok",null,1,null]]"#];
        for bad in bad_records {
            assert!(matches!(decode(a, bad), Err(StoreError::Corrupt(_))), "{bad}");
        }
        let (packed, strings) = columns(&group(&[record(a, &id(1), Some(KeyId::generate()))])[0]);
        assert_eq!(decode_packed(a, &packed, &strings).expect("decodes").len(), 1);
        // Cut short, extended, or naming text the chunk does not have.
        for cut in 1..packed.len() {
            assert!(matches!(decode_packed(a, &packed[..cut], &strings), Err(StoreError::Corrupt(_))), "{cut}");
        }
        let mut longer = packed.clone();
        longer.push(0xff);
        assert!(matches!(decode_packed(a, &longer, &strings), Err(StoreError::Corrupt(_))));
        for strings in ["", "[1]", r#"["/"]"#, r#"{"a":1}"#, "[]"] {
            assert!(matches!(decode_packed(a, &packed, strings), Err(StoreError::Corrupt(_))), "{strings}");
        }
    }
}
