//! Paging: every decision of paging one workflow's history, as a synchronous state machine.
//!
//! [`Pager`] takes what each answer held (the request it answers, its records' fingerprints and
//! start times) and says what to request next, which records to store, when the history ended,
//! or that the workflow must fail. It does no I/O, reads no clock and knows nothing of HTTP: the
//! async shell in [`super`] fetches, flattens and sends, and is a short loop over it.
//!
//! History is newest first and changes while it is paged: runs arrive at the head (every later
//! offset shifts down) and are deleted anywhere (every later offset shifts up). The pager keeps
//! the *anchor*, the last record of the part of the history known to be complete, and requests
//! each page so that it overlaps the anchor. A record is stored only when the answer that holds
//! it also holds, just before it, a record already stored that existed when paging began: such a
//! page is one snapshot in which nothing lies between the two, so nothing slid past unseen.
//!
//! - A page holding the anchor *joins*; records before it that are new arrived during paging.
//! - A page holding only records already stored lies before the anchor (runs arrived): paging
//!   walks on from its end.
//! - A page holding no stored record may lie past a gap: answers overtook each other, or runs
//!   above were deleted and records slid toward the head. It is dropped and the boundary is
//!   *re-read*: first at the anchor's offset, then stepping back (doubling) and bisecting until a
//!   page joins a stored record — an anchor deleted upstream joins on the stored record before
//!   it. Runs found to have *vanished upstream* are counted. If no page joins within
//!   [`MAX_PROBES`] re-reads the workflow fails: a gap that was seen is never exported as done.
//! - The history ends on a short page whose last record is stored, or an empty first page.
//! - An API that refuses offsets that are not multiples of `limit` gets pages whose offset is a
//!   multiple of their own `limit`, still overlapping the anchor ([`aligned_request`]).
//!
//! Once pages come back full, the following pages are requested ahead of the answers, the
//! window doubling up to the caller's share of the concurrency; anything unexpected cancels the
//! requests ahead and paging continues from what is known.

use std::collections::VecDeque;

use crate::flatten::KeySet;

/// Largest number of pages of one workflow requested ahead of the answers.
pub const DEFAULT_MAX_WINDOW: usize = 16;

/// Consecutive non-empty pages bringing no new record before a workflow is failed: an API that
/// ignores `offset` answers the same page again and again.
pub const MAX_PAGES_WITHOUT_NEWS: u32 = 5;

/// Re-reads of one boundary before the workflow fails: enough to step back 2^12 pages and
/// bisect back to a page's width.
pub const MAX_PROBES: u32 = 28;

/// One page to request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Identifies the request in [`Pager::on_page`] and [`Pager::on_refused`].
    pub id: u64,
    /// `offset` to send.
    pub offset: u64,
    /// `limit` to send.
    pub limit: u64,
    /// Records at the start of the page expected to be stored already (their steps need not be
    /// fetched).
    pub overlap: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Offset 0, before anything is known.
    First,
    /// The next page, overlapping the (expected) anchor at this offset.
    Next { anchor_at: u64 },
    /// A re-read while looking for where the history continues.
    Probe,
    /// A page that cannot overlap (pages of one record): stored as it comes, unchecked.
    Blind,
}

/// What an answer held, in page order.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// A fingerprint of each record (its run id's, or its text's).
    pub keys: &'a [u128],
    /// Each record's start time, when readable (same length as `keys`).
    pub starts: &'a [Option<i64>],
}

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Per record of the page, whether to store it (seen for the first time); all `false` for a
    /// page that is dropped (its records come again).
    pub keep: Vec<bool>,
    /// Records received before and skipped, beyond the expected overlap.
    pub repeats: u64,
    /// The pages in flight are no longer wanted: drop them.
    pub cancel: bool,
}

/// What the shell should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Send this request now (and poll again).
    Send(PageRequest),
    /// Wait for the oldest answer in flight.
    Wait,
    /// The history is read (to its end, or to the incremental cursor).
    Done,
    /// The workflow must fail.
    Failed(PagingError),
}

/// What a refused request (400/422) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The API accepts only offsets that are multiples of `limit`: paging goes on with aligned
    /// pages (from now on; drop the pages in flight). Returned once per workflow.
    Aligned,
    /// A real error: fail the workflow with it.
    Fatal,
}

/// Why paging gives up on a workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// Page after page brought only runs already seen: the API ignores `offset`, or is looping.
    #[error(
        "{pages} pages in a row up to offset {offset} held only runs already seen; the API seems to ignore `offset`"
    )]
    NoProgress {
        /// Pages without a new record.
        pages: u32,
        /// Offset of the last of them.
        offset: u64,
    },
    /// Runs vanished upstream and no re-read found where the history continues.
    #[error(
        "runs vanished upstream while the history was paged, and {probes} re-reads back from offset {offset} found no page that continues from the runs already read; this workflow's export is incomplete"
    )]
    CannotRejoin {
        /// Offset of the last record known to be complete.
        offset: u64,
        /// Re-reads made.
        probes: u32,
    },
}

/// Settings of one workflow's paging.
#[derive(Debug, Clone, Copy)]
pub struct PagerOptions {
    /// `limit` asked for (the API may cap pages lower).
    pub limit: u64,
    /// Pages in flight at most.
    pub max_window: usize,
    /// Incremental: stop after a page whose newest run started before this (µs since the epoch).
    pub stop_before: Option<i64>,
}

/// Counters of one workflow's paging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PagingStats {
    /// Answers received (including dropped and final empty ones).
    pub pages: u64,
    /// Pages whose start had shifted because runs arrived at the head during paging.
    pub shifts: u64,
    /// Pages requested again to find where the history continues.
    pub rereads: u64,
    /// Runs found deleted upstream during paging (at least this many): runs above the anchor
    /// whose deletion moved it toward the head, and anchors that were themselves deleted.
    pub vanished: u64,
    /// Page boundaries that could not be checked (pages of one record).
    pub unchecked: u64,
    /// Paging switched to offsets that are multiples of `limit`.
    pub aligned: bool,
    /// Paging stopped at the incremental cursor rather than at the end.
    pub stopped_at_cursor: bool,
}

/// The last record of the part of the history known to be complete.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    key: u128,
    /// Where it was last seen.
    offset: u64,
}

/// Looking for where the history continues: what the re-reads so far showed.
#[derive(Debug, Clone, Copy, Default)]
struct Search {
    /// The frontier is past this offset (a page ending here held only stored records).
    lo: Option<u64>,
    /// The frontier is before this offset (a page starting here held none, or nothing).
    hi: Option<u64>,
    /// Re-reads made.
    probes: u32,
    /// How far the next step back goes.
    back: u64,
    /// A page past the frontier held records: the history does not end before it.
    beyond: bool,
}

/// How an answer relates to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Nothing at all.
    Empty,
    /// Record `at` is stored and existed when paging began, and records after it are new:
    /// they continue the history (`anchor`: record `at` is the anchor itself).
    Join { at: usize, anchor: bool },
    /// Every record is stored: the page lies before the frontier.
    AllSeen,
    /// No stored record, every record started after every stored one: runs that arrived.
    Arrivals,
    /// No stored record: records may have slid past unseen.
    Gap,
}

/// The paging state machine of one workflow; see the module documentation.
#[derive(Debug)]
pub struct Pager {
    options: PagerOptions,
    /// Every record stored.
    seen: KeySet,
    /// Records stored that arrived during paging (never join points).
    arrivals: KeySet,
    /// Newest start among stored records that existed when paging began.
    newest_old_start: Option<i64>,
    anchor: Option<Anchor>,
    /// The records of the last stretch stored, from its join record on, and where the first
    /// was seen: tells how many runs vanished when a page joins before the anchor.
    trail: Vec<u128>,
    trail_base: u64,
    /// Records a full page holds: the largest page received (the API may cap `limit`).
    stride: Option<u64>,
    /// The largest page shorter than asked that records followed: the API's cap, as far as it
    /// has shown one.
    cap: Option<u64>,
    /// Pages shorter than asked of different sizes were followed by records: the API's page
    /// size varies, so a short page ending on a stored record may be its cut, not the end.
    caps_vary: bool,
    /// The size of the last page that ended at the frontier, and the `limit` it was asked for.
    frontier_page: Option<(u64, u64)>,
    /// Short pages in a row that ended on a stored record with nothing after it.
    end_votes: u32,
    aligned: bool,
    next_id: u64,
    in_flight: VecDeque<PageRequest>,
    /// Where the next planned page overlaps: the anchor's offset, or where the last page
    /// requested ahead is expected to end.
    cursor: u64,
    window: usize,
    /// Incremental: pages likely left before the cursor.
    pages_left: usize,
    /// Records of extra overlap each page is requested with: grows while runs vanish above the
    /// anchor between answers (so the next page still holds it), shrinks while none do.
    margin: u64,
    search: Option<Search>,
    pages_without_news: u32,
    previous_oldest: Option<i64>,
    outcome: Option<Result<(), PagingError>>,
    stats: PagingStats,
}

impl Pager {
    /// A pager for one workflow's history.
    pub fn new(options: PagerOptions) -> Self {
        Self {
            options: PagerOptions {
                limit: options.limit.max(1),
                max_window: options.max_window.max(1),
                ..options
            },
            seen: KeySet::default(),
            arrivals: KeySet::default(),
            newest_old_start: None,
            anchor: None,
            trail: Vec::new(),
            trail_base: 0,
            stride: None,
            cap: None,
            caps_vary: false,
            frontier_page: None,
            end_votes: 0,
            aligned: false,
            next_id: 0,
            in_flight: VecDeque::new(),
            cursor: 0,
            window: 1,
            pages_left: usize::MAX,
            margin: 0,
            search: None,
            pages_without_news: 0,
            previous_oldest: None,
            outcome: None,
            stats: PagingStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &PagingStats {
        &self.stats
    }

    /// Fingerprints of every record stored.
    pub fn seen(&self) -> &KeySet {
        &self.seen
    }

    /// The fingerprints of every record stored, for what follows paging.
    pub fn into_seen(self) -> KeySet {
        self.seen
    }

    /// The next thing to do; `share` caps the pages in flight (this workflow's share of the
    /// export's concurrency).
    pub fn poll(&mut self, share: usize) -> Poll {
        match &self.outcome {
            Some(Ok(())) => return Poll::Done,
            Some(Err(e)) => return Poll::Failed(e.clone()),
            None => {}
        }
        let window = if self.anchor.is_none() || self.search.is_some() {
            1
        } else {
            self.window.min(share.max(1)).min(self.pages_left).max(1)
        };
        if self.in_flight.len() >= window {
            return Poll::Wait;
        }
        let request = match (self.anchor, self.search) {
            (None, _) => {
                self.cursor = self.options.limit - 1;
                self.request(0, self.options.limit, 0, Kind::First)
            }
            (Some(_), Some(search)) => {
                let at = self.probe_position(&search);
                let (offset, limit, _) = self.plan(at, 0);
                self.stats.rereads += 1;
                self.request(offset, limit, 0, Kind::Probe)
            }
            (Some(_), None) => {
                let at = self.cursor;
                let (offset, limit, blind) = self.plan(at, self.margin);
                let expected = self.expected(limit);
                if blind {
                    self.cursor = offset + expected;
                    self.request(offset, limit, 0, Kind::Blind)
                } else {
                    self.cursor = offset + expected - 1;
                    let overlap = at - offset + 1;
                    self.request(offset, limit, overlap, Kind::Next { anchor_at: at })
                }
            }
        };
        self.in_flight.push_back(request);
        Poll::Send(request)
    }

    fn request(&mut self, offset: u64, limit: u64, overlap: u64, kind: Kind) -> PageRequest {
        self.next_id += 1;
        PageRequest {
            id: self.next_id,
            offset,
            limit,
            overlap,
            kind,
        }
    }

    /// Records a full page of `limit` holds.
    fn expected(&self, limit: u64) -> u64 {
        limit.min(self.stride.unwrap_or(limit)).max(1)
    }

    /// The request whose page overlaps offset `at` (and `margin` records before it) and the
    /// record after it: `(offset, limit, blind)`; blind when no page can (pages of one record).
    fn plan(&self, at: u64, margin: u64) -> (u64, u64, bool) {
        let full = self.expected(self.options.limit);
        if full <= 1 {
            return (at + 1, self.options.limit, true);
        }
        if !self.aligned {
            return (at.saturating_sub(margin), self.options.limit, false);
        }
        // With the margin, as long as the page still reaches past `at`.
        let with_margin = aligned_request(at.saturating_sub(margin), full)
            .filter(|(offset, limit)| offset + limit > at + 1);
        match with_margin.or_else(|| aligned_request(at, full)) {
            Some((offset, limit)) => (offset, limit, false),
            // Every aligned page starts or ends at this boundary: read past it unchecked.
            None => (at + 1, full, true),
        }
    }

    /// Where the next re-read starts.
    fn probe_position(&self, search: &Search) -> u64 {
        let anchor_at = self.anchor.map_or(0, |a| a.offset);
        let width = self.expected(self.options.limit);
        match (search.lo, search.hi) {
            (Some(lo), Some(hi)) if hi.saturating_sub(lo) >= width => {
                // Bisect: a page around the middle of what is unknown.
                (lo + (hi - lo) / 2).saturating_sub(width / 2).max(lo)
            }
            (Some(lo), _) => lo,
            (None, Some(hi)) if search.probes == 0 && hi > anchor_at => anchor_at,
            (None, Some(hi)) => hi.saturating_sub(search.back),
            (None, None) => anchor_at,
        }
    }

    /// A request was refused (400/422). An unaligned offset refused after pages were read
    /// means the API wants offsets that are multiples of `limit`.
    pub fn on_refused(&mut self, id: u64) -> Refusal {
        let Some(request) = self.take_in_flight(id) else {
            return Refusal::Fatal;
        };
        let unaligned = !request.offset.is_multiple_of(request.limit);
        if self.aligned || !unaligned || self.anchor.is_none() {
            return Refusal::Fatal;
        }
        self.aligned = true;
        self.stats.aligned = true;
        self.in_flight.clear();
        self.cursor = self.anchor.map_or(0, |a| a.offset);
        self.window = 1;
        Refusal::Aligned
    }

    fn take_in_flight(&mut self, id: u64) -> Option<PageRequest> {
        let at = self.in_flight.iter().position(|r| r.id == id)?;
        self.in_flight.remove(at)
    }

    /// An answer to request `id`, in the order the requests were made.
    pub fn on_page(&mut self, id: u64, answer: Answer<'_>) -> Verdict {
        let n = answer.keys.len();
        let mut verdict = Verdict {
            keep: vec![false; n],
            repeats: 0,
            cancel: false,
        };
        let Some(request) = self.take_in_flight(id) else {
            return verdict; // cancelled earlier
        };
        if self.outcome.is_some() {
            return verdict;
        }
        self.stats.pages += 1;
        let received = n as u64;
        if received > 0 {
            let capped = received.min(self.options.limit);
            self.stride = Some(match (self.stride, request.kind) {
                (None, _) | (_, Kind::First) => received,
                (Some(s), _) => s.max(capped),
            });
        }
        let short = received < self.expected(request.limit);
        let class = match request.kind {
            Kind::First | Kind::Blind if n > 0 => Class::Join {
                at: usize::MAX,
                anchor: false,
            },
            Kind::First | Kind::Blind => Class::Empty,
            Kind::Next { .. } | Kind::Probe => self.classify(answer),
        };
        match class {
            Class::Join { at, anchor } => {
                self.accept_join(&request, answer, at, anchor, short, &mut verdict);
            }
            Class::AllSeen | Class::Arrivals => {
                self.accept_before(&request, answer, class, &mut verdict);
            }
            Class::Empty if request.kind == Kind::First || request.kind == Kind::Blind => {
                self.outcome = Some(Ok(()));
            }
            Class::Empty | Class::Gap => self.lost_track(&request, n > 0, &mut verdict),
        }
        verdict
    }

    fn is_old(&self, key: &u128) -> bool {
        self.seen.contains(key) && !self.arrivals.contains(key)
    }

    fn classify(&self, answer: Answer<'_>) -> Class {
        let keys = answer.keys;
        if keys.is_empty() {
            return Class::Empty;
        }
        if let Some(a) = self.anchor
            && let Some(at) = keys.iter().position(|k| *k == a.key)
        {
            return Class::Join { at, anchor: true };
        }
        if let Some(at) = keys.iter().rposition(|k| self.is_old(k)) {
            return if at + 1 == keys.len() {
                Class::AllSeen
            } else {
                Class::Join { at, anchor: false }
            };
        }
        let arrived = |s: &Option<i64>| match (s, self.newest_old_start) {
            (Some(s), Some(newest)) => *s > newest,
            _ => false,
        };
        if answer.starts.iter().all(arrived) {
            Class::Arrivals
        } else {
            Class::Gap
        }
    }

    /// Stores the new records of a page that joins at record `at` (`usize::MAX`: the first page,
    /// or a page that cannot overlap, all of whose records continue the history).
    fn accept_join(
        &mut self,
        request: &PageRequest,
        answer: Answer<'_>,
        at: usize,
        at_anchor: bool,
        short: bool,
        verdict: &mut Verdict,
    ) {
        let n = answer.keys.len();
        let o = request.offset;
        let (first_new, join_offset) = if at == usize::MAX {
            (0, None)
        } else {
            (at + 1, Some(o + at as u64))
        };
        if request.kind == Kind::Blind {
            self.stats.unchecked += 1;
        }
        if let Some(observed) = join_offset {
            let vanished = self.count_drift(answer.keys[at], observed, at_anchor, request.kind);
            let width = self.expected(self.options.limit);
            self.margin = if vanished > 0 {
                (self.margin.max(2 * vanished)).min(width / 4)
            } else {
                self.margin / 2
            };
        }
        let searched = self.search.take();
        let was_searching = searched.is_some();
        // Before the join record: runs that arrived during paging (stored, never joined on).
        let mut news = 0u64;
        let mut seen_before = 0u64;
        for i in 0..n {
            let key = answer.keys[i];
            if !self.seen.insert(key) {
                seen_before += 1;
                continue;
            }
            verdict.keep[i] = true;
            news += 1;
            if i < first_new {
                self.arrivals.insert(key);
            } else if let Some(start) = answer.starts[i] {
                self.newest_old_start = Some(self.newest_old_start.map_or(start, |s| s.max(start)));
            }
        }
        verdict.repeats = match request.kind {
            Kind::Next { anchor_at } => seen_before.saturating_sub(anchor_at + 1 - o),
            Kind::Probe => 0,
            _ => seen_before,
        };
        // The anchor: the page's last record, where it was seen.
        if n > 0 {
            let last = n - 1;
            self.anchor = Some(Anchor {
                key: answer.keys[last],
                offset: o + last as u64,
            });
            if first_new < n {
                let from = first_new.saturating_sub(1).min(at);
                self.trail = answer.keys[from..].to_vec();
                self.trail_base = o + from as u64;
            } else {
                // Nothing new: the stored stretch was seen again, ending here.
                self.trail_base = (o + last as u64 + 1).saturating_sub(self.trail.len() as u64);
            }
        }
        if first_new >= n {
            // Records were seen past the frontier while looking for it: not the end.
            let more = searched.is_some_and(|s| s.beyond);
            if !more && self.ends_here(n, request.limit) {
                self.outcome = Some(Ok(()));
                return;
            }
            // Nothing new: ask at the last record itself, which ends the history or goes on.
            self.margin = 0;
        } else {
            self.records_follow();
        }
        self.frontier_page = Some((n as u64, request.limit));
        if self.no_progress(news, o) {
            return;
        }
        let starts = || answer.starts.iter().flatten().copied();
        let (oldest, newest) = (starts().min(), starts().max());
        if self
            .options
            .stop_before
            .zip(newest)
            .is_some_and(|(stop, newest)| newest < stop)
        {
            // Incremental: a whole page older than the cursor minus the look-back (its newest
            // run, not its oldest: one odd old start must not end paging early).
            self.stats.stopped_at_cursor = true;
            self.outcome = Some(Ok(()));
            return;
        }
        let full = !short;
        // Pages of one record are read one at a time, as before anything was known.
        let expected_join = self.expected(self.options.limit) > 1
            && (request.kind == Kind::First
                || (matches!(request.kind, Kind::Next { .. }) && at_anchor));
        if full && expected_join && !was_searching {
            self.window = (self.window * 2).min(self.options.max_window);
            self.estimate_pages_left(oldest, newest);
            if self.in_flight.is_empty() {
                // Nothing requested ahead: go on from what is known, not from a prediction.
                self.cursor = self.anchor.map_or(0, |a| a.offset);
            }
        } else {
            verdict.cancel = self.restart_from_anchor();
        }
        self.previous_oldest = oldest.or(self.previous_oldest);
    }

    /// Counts how the join record moved since it was stored: down (runs arrived above it) or up
    /// (runs above it were deleted), and anchors deleted; returns how many runs vanished.
    fn count_drift(&mut self, key: u128, observed: u64, at_anchor: bool, kind: Kind) -> u64 {
        let Some(anchor) = self.anchor else {
            return 0;
        };
        let vanished = if at_anchor {
            if observed > anchor.offset && kind != Kind::Probe {
                self.stats.shifts += 1;
            }
            anchor.offset.saturating_sub(observed)
        } else {
            // The anchor is gone: joined on a stored record before it.
            match self.trail.iter().position(|k| *k == key) {
                Some(k) => {
                    let deleted_after = (self.trail.len() - 1 - k) as u64;
                    let was_at = self.trail_base + k as u64;
                    deleted_after + was_at.saturating_sub(observed)
                }
                None => self.trail.len().max(1) as u64,
            }
        };
        self.stats.vanished += vanished;
        vanished
    }

    /// A page of stored records (or of runs that arrived): the frontier is further on.
    fn accept_before(
        &mut self,
        request: &PageRequest,
        answer: Answer<'_>,
        class: Class,
        verdict: &mut Verdict,
    ) {
        let n = answer.keys.len();
        let mut news = 0;
        for (i, key) in answer.keys.iter().enumerate() {
            // Unseen records here are runs that arrived (or an API that reorders): stored, but
            // never joined on.
            if self.seen.insert(*key) {
                self.arrivals.insert(*key);
                verdict.keep[i] = true;
                news += 1;
            }
        }
        if class == Class::AllSeen && request.kind != Kind::Probe {
            self.stats.shifts += 1;
            verdict.repeats = (n as u64 - news).saturating_sub(request.overlap);
        }
        let more = self.search.is_some_and(|s| s.beyond);
        if !more && self.ends_here(n, request.limit) {
            // Nothing after these records: the history ends before the anchor, which was
            // deleted (purged from the tail) with what followed it.
            self.stats.vanished += 1;
            self.outcome = Some(Ok(()));
            return;
        }
        self.margin = 0;
        let end = request.offset + n as u64 - 1;
        match &mut self.search {
            Some(search) => {
                search.lo = Some(search.lo.map_or(end, |lo| lo.max(end)));
                if search.hi.is_some_and(|hi| hi <= end) {
                    search.hi = None;
                }
                self.search_budget(request);
            }
            None => {
                if self.no_progress(news, request.offset) {
                    return;
                }
                verdict.cancel = !self.in_flight.is_empty();
                self.in_flight.clear();
                self.cursor = end;
                self.window = 1;
            }
        }
    }

    /// A page that does not join (or nothing where the history should go on): drop it and
    /// look for where the history continues.
    fn lost_track(&mut self, request: &PageRequest, held_records: bool, verdict: &mut Verdict) {
        verdict.cancel = !self.in_flight.is_empty();
        self.in_flight.clear();
        if held_records {
            self.records_follow();
        }
        let width = self.expected(self.options.limit);
        let search = self.search.get_or_insert(Search {
            back: (width / 2).max(1),
            ..Search::default()
        });
        search.beyond |= held_records;
        let o = request.offset;
        if request.kind == Kind::Probe && search.lo.is_none() && search.probes > 0 {
            // Stepping back found nothing stored yet: step back twice as far next time.
            search.back = search.back.saturating_mul(2);
        }
        if search.hi.is_none_or(|hi| o < hi) {
            search.hi = Some(o);
        }
        if search.lo.is_some_and(|lo| Some(lo) >= search.hi) {
            search.lo = None;
        }
        self.search_budget(request);
    }

    /// Fails the workflow once re-reads are used up, or when even offset 0 held nothing stored.
    fn search_budget(&mut self, request: &PageRequest) {
        let Some(search) = &mut self.search else {
            return;
        };
        if request.kind == Kind::Probe {
            search.probes += 1;
        }
        let head_lost = search.lo.is_none() && search.hi == Some(0);
        if search.probes >= MAX_PROBES || head_lost {
            self.outcome = Some(Err(PagingError::CannotRejoin {
                offset: self.anchor.map_or(0, |a| a.offset),
                probes: search.probes,
            }));
        }
    }

    /// Whether a page of `n` records asked with `limit`, ending on a stored record with nothing
    /// new after it, shows that the history ends there. A page of that one record does. A page
    /// shorter than asked (and than the API's cap, once shown) may still be the API's cut: runs
    /// arriving at the head push the last record down a page started at it, so the second such
    /// page in a row does, or the third when the API's page size was seen to vary.
    fn ends_here(&mut self, n: usize, limit: u64) -> bool {
        if n == 1 {
            return true;
        }
        if n as u64 >= limit.min(self.cap.unwrap_or(u64::MAX)) {
            self.end_votes = 0;
            return false;
        }
        self.end_votes += 1;
        self.end_votes >= if self.caps_vary { 3 } else { 2 }
    }

    /// Records were seen after the frontier: the page that ended there, if shorter than asked,
    /// was the API's cut, and no page so far showed the end.
    fn records_follow(&mut self) {
        if let Some((len, limit)) = self.frontier_page.take()
            && len < limit
        {
            self.caps_vary |= self.cap.is_some_and(|cap| cap != len);
            self.cap = Some(self.cap.map_or(len, |cap| cap.max(len)));
        }
        self.end_votes = 0;
    }

    /// Counts a page that brought nothing new; fails the workflow after too many in a row.
    fn no_progress(&mut self, news: u64, offset: u64) -> bool {
        self.pages_without_news = if news == 0 {
            self.pages_without_news + 1
        } else {
            0
        };
        if self.pages_without_news < MAX_PAGES_WITHOUT_NEWS {
            return false;
        }
        self.outcome = Some(Err(PagingError::NoProgress {
            pages: self.pages_without_news,
            offset,
        }));
        true
    }

    /// Drops the pages in flight and continues from the anchor, one page at a time; returns
    /// whether any was in flight.
    fn restart_from_anchor(&mut self) -> bool {
        let cancelled = !self.in_flight.is_empty();
        self.in_flight.clear();
        self.cursor = self.anchor.map_or(0, |a| a.offset);
        self.window = 1;
        cancelled
    }

    /// Incremental: do not request far past the cursor; estimate the pages left from the time
    /// one page covered.
    fn estimate_pages_left(&mut self, oldest: Option<i64>, newest: Option<i64>) {
        let (Some(stop), Some(oldest)) = (self.options.stop_before, oldest) else {
            return;
        };
        let newest = newest.unwrap_or(oldest);
        let span = self
            .previous_oldest
            .map_or(newest - oldest, |p| p - oldest)
            .max(1);
        let left = ((oldest - stop) / span).saturating_add(1).max(1);
        self.pages_left = usize::try_from(left).unwrap_or(usize::MAX);
    }
}

/// The page whose offset is a multiple of its `limit` (at most `full`) that holds offset `at`
/// and at least one record after it, bringing the most records past `at`: `(offset, limit)`.
/// `None` when no such page exists (every page of 2…`full` records starts or ends at that
/// boundary, which needs `at + 1` to be a multiple of each of 2…`full`).
pub fn aligned_request(at: u64, full: u64) -> Option<(u64, u64)> {
    (2..=full)
        .rev()
        .filter_map(|limit| {
            let into = at % limit;
            (into + 2 <= limit).then_some((limit - 1 - into, limit))
        })
        .max_by_key(|&(past, limit)| (past, limit))
        .map(|(_, limit)| (at - at % limit, limit))
}

#[cfg(test)]
mod tests;
