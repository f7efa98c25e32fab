//! A request-log record and the chunk it is stored in (SPEC §8): [`RequestRecord`] as a
//! listing returns it, [`NewRequestRecord`] as a request hands it over, its [`RecordId`], and
//! [`RequestChunk`], the records of one account and one time bucket encoded in the packed form
//! the SQL backends store (`sql/requestlog.rs` has the form, its rows and the listing).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;

use keygate_domain::ids::canonical_ulid;
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, KeyId, RequestId, TenantId};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// A record that could not be put in a chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The record's id is not a record id (`rl_<ULID>`).
    #[error("not a request record id: {0:?}")]
    NotAnId(String),
    /// The encoding refused the record (postcard refuses nothing these fields hold).
    #[error("request record: {0}")]
    Encoding(String),
}

/// One authenticated request, as the request log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `rl_<ULID>`, made by [`RequestRecord::generate_id`]: unique and ordered by time, unlike
    /// `request_id`, which a client may choose.
    pub id: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
    pub at: Timestamp,
    pub account_id: AccountId,
    pub key_id: Option<KeyId>,
    pub tenant_id: Option<TenantId>,
    /// The matched route template (`/v1/api-keys/{id}`), or the path of a gateway request.
    pub route: String,
    pub method: String,
    pub status: u16,
    /// The error code, or `ok`.
    pub outcome: String,
    pub client_ip: Option<IpAddr>,
    pub latency_us: u64,
    /// For a use recorded by `POST /v1/verify` (SPEC §9): the key that asked; `key_id` is the key
    /// it verified.
    pub via_key_id: Option<KeyId>,
}

/// A request the request log is to keep, borrowed from the request that made it (SPEC §8):
/// [`RequestChunk::push`] encodes it straight into a chunk, so keeping it allocates nothing per
/// field. The fields are [`RequestRecord`]'s, but its id, which the chunk makes.
#[derive(Debug, Clone, Copy)]
pub struct NewRequestRecord<'a> {
    pub request_id: &'a str,
    pub at: Timestamp,
    pub account_id: AccountId,
    pub key_id: Option<KeyId>,
    pub tenant_id: Option<TenantId>,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    pub client_ip: Option<IpAddr>,
    pub latency_us: u64,
    pub via_key_id: Option<KeyId>,
}

impl RequestRecord {
    pub const ID_PREFIX: &'static str = "rl_";

    /// A new record id, `rl_<ULID>`, ordered by creation time; within this process strictly
    /// increasing, also within one millisecond (the listing's order is the id's).
    #[must_use]
    pub fn generate_id() -> String {
        RecordId::generate().to_string()
    }

    /// The record as the request log takes a new one, borrowing its text.
    #[must_use]
    pub fn as_new(&self) -> NewRequestRecord<'_> {
        NewRequestRecord {
            request_id: &self.request_id,
            at: self.at,
            account_id: self.account_id,
            key_id: self.key_id,
            tenant_id: self.tenant_id,
            route: &self.route,
            method: &self.method,
            status: self.status,
            outcome: &self.outcome,
            client_ip: self.client_ip,
            latency_us: self.latency_us,
            via_key_id: self.via_key_id,
        }
    }

    /// The smallest record id a record made at `at` can have: every id below it was made
    /// earlier (retention deletes by it, SPEC §8).
    #[must_use]
    pub fn first_id_at(at: Timestamp) -> String {
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or_default();
        RecordId(Ulid::from_parts(ms, 0)).to_string()
    }

    /// Whether `s` has the shape of a record id (for checking a cursor).
    #[must_use]
    pub fn is_id(s: &str) -> bool {
        s.strip_prefix(Self::ID_PREFIX)
            .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
    }
}

/// Records per chunk at most: a busy account's records are split, so no row grows without bound
/// (1,000 records are about 52 KB).
pub const MAX_CHUNK_RECORDS: usize = 1_000;

/// A request-log record's id: `rl_<ULID>` in text ([`RequestRecord::id`]), made by
/// [`RecordId::generate`]: ordered by creation time, and within this process strictly increasing,
/// also within one millisecond (the listing's order is the id's).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub(crate) Ulid);

impl RecordId {
    /// A new id, above every id this process made before.
    #[must_use]
    pub fn generate() -> Self {
        static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
        let next = GENERATOR.lock().ok().and_then(|mut generator| generator.generate().ok());
        // Overflow (2^80 ids in one millisecond) or a poisoned lock: a plain new id.
        Self(next.unwrap_or_else(Ulid::generate))
    }

    /// The id's time bucket: ids whose text shares its first 9 characters (`rl_` and the first 6
    /// of the ULID's 10 time characters), 2^20 ms (about 17.5 minutes) of them. Every record of a
    /// chunk is of one bucket, which bounds what a chunk spans (retention keeps a record at most
    /// one bucket past its time) and lets a listing seek by id (`sql/requestlog.rs`).
    pub(crate) fn bucket(self) -> u128 {
        self.0.0 >> 100
    }

    /// The id's time, in whole seconds since the Unix epoch: what a packed record's `at` is
    /// counted back from.
    pub(crate) fn seconds(self) -> i64 {
        i64::try_from(self.0.timestamp_ms() / 1000).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(RequestRecord::ID_PREFIX)?;
        f.write_str(self.0.array_to_str(&mut [0; ulid::ULID_LEN]))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for RecordId {
    type Err = ChunkError;

    /// `rl_` and a canonical ULID.
    fn from_str(s: &str) -> Result<Self, ChunkError> {
        s.strip_prefix(RequestRecord::ID_PREFIX)
            .filter(|ulid| canonical_ulid(ulid))
            .and_then(|ulid| Ulid::from_string(ulid).ok())
            .map(Self)
            .ok_or_else(|| ChunkError::NotAnId(s.to_owned()))
    }
}

/// A record as `packed` stores it (`sql/requestlog.rs`). Field order is the encoding: append, never
/// reorder.
#[derive(Serialize, Deserialize)]
pub(crate) struct Packed<'a> {
    /// The record id's ULID, big-endian.
    pub(crate) id: [u8; 16],
    #[serde(borrow)]
    pub(crate) request_id: RequestIdForm<'a>,
    /// The id's time in whole seconds, minus `at` (a request's record is made as it ends).
    pub(crate) at_before_id: i64,
    /// Indexes in the chunk's `strings`.
    pub(crate) key_id: Option<u32>,
    pub(crate) tenant_id: Option<u32>,
    pub(crate) route: u32,
    pub(crate) method: u32,
    pub(crate) status: u16,
    pub(crate) outcome: u32,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) latency_us: u64,
    pub(crate) via_key_id: Option<u32>,
}

/// A request id as `packed` stores it.
#[derive(Serialize, Deserialize)]
pub(crate) enum RequestIdForm<'a> {
    /// `req_` and this ULID (big-endian), the form keygate makes.
    Made([u8; 16]),
    /// Any other text (a client's own `X-Request-Id`).
    Sent(&'a str),
}

/// Records of one account and one time bucket, encoded as the request log stores them
/// (`sql/requestlog.rs`), to be written as one row by [`crate::RequestLog::record_requests`].
///
/// Built a record at a time ([`RequestChunk::push`]): the request path encodes its record straight
/// into its account's open chunk.
pub struct RequestChunk {
    pub(crate) account: AccountId,
    /// The smallest and largest record id; meaningless while the chunk is empty.
    pub(crate) first_id: RecordId,
    pub(crate) last_id: RecordId,
    /// The earliest and latest `at`, in seconds since the Unix epoch.
    pub(crate) first_at: i64,
    pub(crate) last_at: i64,
    pub(crate) count: usize,
    /// The records, one [`Packed`] after another.
    pub(crate) records: Vec<u8>,
    /// The JSON array of the strings records name by index.
    pub(crate) strings: Vec<u8>,
    /// Indexes in `strings`: of ids by kind and ULID, and of other text.
    ids: HashMap<(u8, u128), u32, foldhash::fast::RandomState>,
    texts: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
}

/// The kinds of id a chunk's strings hold, so a key and a tenant never share an entry.
const KEY: u8 = 0;
const TENANT: u8 = 1;

impl fmt::Debug for RequestChunk {
    /// The span and size, not the records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestChunk")
            .field("account", &self.account)
            .field("first_id", &self.first_id)
            .field("last_id", &self.last_id)
            .field("count", &self.count)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl RequestChunk {
    /// An empty chunk of `account`'s records.
    #[must_use]
    pub fn new(account: AccountId) -> Self {
        Self {
            account,
            first_id: RecordId(Ulid::nil()),
            last_id: RecordId(Ulid::nil()),
            first_at: i64::MAX,
            last_at: i64::MIN,
            count: 0,
            records: Vec::new(),
            strings: b"[]".to_vec(),
            ids: HashMap::default(),
            texts: HashMap::default(),
        }
    }

    /// Groups `records` into chunks by account and time bucket, at most [`MAX_CHUNK_RECORDS`]
    /// each: for records made whole elsewhere (a test, a bench); the request path pushes into an
    /// open chunk instead.
    ///
    /// # Errors
    /// A record whose id is not a record id (`rl_<ULID>`), or that could not be encoded.
    pub fn group(records: &[RequestRecord]) -> Result<Vec<Self>, ChunkError> {
        let mut sorted: Vec<(RecordId, &RequestRecord)> =
            records.iter().map(|r| Ok((r.id.parse()?, r))).collect::<Result<_, ChunkError>>()?;
        sorted.sort_by(|(a_id, a), (b_id, b)| a.account_id.cmp(&b.account_id).then(a_id.bucket().cmp(&b_id.bucket())));
        let mut out: Vec<Self> = Vec::new();
        for (id, record) in sorted {
            match out.last_mut() {
                Some(chunk) if chunk.account == record.account_id && chunk.takes(id) => {
                    chunk.push(id, &record.as_new())?;
                }
                _ => {
                    let mut chunk = Self::new(record.account_id);
                    chunk.push(id, &record.as_new())?;
                    out.push(chunk);
                }
            }
        }
        Ok(out)
    }

    #[must_use]
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The smallest record id in the chunk; `None` while it is empty.
    #[must_use]
    pub fn first_id(&self) -> Option<RecordId> {
        (self.count > 0).then_some(self.first_id)
    }

    /// The bytes the chunk stores: its records and its strings.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.records.len() + self.strings.len()
    }

    /// How many records the chunk holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the chunk holds [`MAX_CHUNK_RECORDS`].
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.count >= MAX_CHUNK_RECORDS
    }

    /// Whether a record with id `id` may join: the chunk is not full, and it is empty or of the
    /// id's time bucket.
    #[must_use]
    pub fn takes(&self, id: RecordId) -> bool {
        self.count == 0 || (!self.is_full() && id.bucket() == self.first_id.bucket())
    }

    /// Appends the record `r` with id `id`. The caller checks [`RequestChunk::takes`] first, and
    /// that `r` is of the chunk's account: a chunk stores the account once, for every record.
    ///
    /// # Errors
    /// [`ChunkError::Encoding`] if the record could not be encoded (postcard refuses nothing
    /// these fields hold); the chunk is left as it was.
    pub fn push(&mut self, id: RecordId, r: &NewRequestRecord<'_>) -> Result<(), ChunkError> {
        debug_assert!(self.takes(id) && r.account_id == self.account, "a record of another chunk");
        let at = r.at.timestamp();
        let request_id = match r.request_id.parse::<RequestId>() {
            Ok(made) => RequestIdForm::Made(made.ulid().to_bytes()),
            Err(_) => RequestIdForm::Sent(r.request_id),
        };
        let packed = Packed {
            id: id.0.to_bytes(),
            request_id,
            at_before_id: id.seconds().saturating_sub(at),
            key_id: r.key_id.map(|k| self.id(KEY, k.ulid().0, &k)),
            tenant_id: r.tenant_id.map(|t| self.id(TENANT, t.ulid().0, &t)),
            route: self.text(r.route),
            method: self.text(r.method),
            status: r.status,
            outcome: self.text(r.outcome),
            client_ip: r.client_ip,
            latency_us: r.latency_us,
            via_key_id: r.via_key_id.map(|k| self.id(KEY, k.ulid().0, &k)),
        };
        let before = self.records.len();
        if let Err(e) = postcard::to_extend(&packed, Tail(&mut self.records)) {
            self.records.truncate(before);
            return Err(ChunkError::Encoding(e.to_string()));
        }
        if self.count == 0 || id < self.first_id {
            self.first_id = id;
        }
        if self.count == 0 || id > self.last_id {
            self.last_id = id;
        }
        self.first_at = self.first_at.min(at);
        self.last_at = self.last_at.max(at);
        self.count += 1;
        Ok(())
    }

    /// The index in `strings` of the id `text` of `kind` and `ulid`, appending its text the
    /// first time (once a chunk: looked up by its ULID, the id is written out only then).
    fn id(&mut self, kind: u8, ulid: u128, text: &impl fmt::Display) -> u32 {
        let next = u32::try_from(self.ids.len() + self.texts.len()).unwrap_or(u32::MAX);
        let strings = &mut self.strings;
        *self.ids.entry((kind, ulid)).or_insert_with(|| {
            append_string(strings, &text.to_string());
            next
        })
    }

    /// The index in `strings` of `text`, appending it the first time.
    fn text(&mut self, text: &str) -> u32 {
        if let Some(&n) = self.texts.get(text) {
            return n;
        }
        let next = u32::try_from(self.ids.len() + self.texts.len()).unwrap_or(u32::MAX);
        append_string(&mut self.strings, text);
        self.texts.insert(text.into(), next);
        next
    }
}

/// The end of a buffer, for postcard to append to.
struct Tail<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Tail<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Appends `s` to the JSON array of strings `array`, escaped as `serde_json` escapes it.
fn append_string(array: &mut Vec<u8>, s: &str) {
    array.pop();
    if array.len() > 1 {
        array.push(b',');
    }
    // Writing to a Vec cannot fail, and a `str` always serializes.
    let _ = serde_json::to_writer(&mut *array, s);
    array.push(b']');
}
