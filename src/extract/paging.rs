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
//! each page so that it overlaps the anchor. The part known to be complete grows only by the
//! records that follow, in one answer, a record already stored that existed when paging began
//! (and has a unique run id): that answer is one snapshot with nothing between the two, so
//! nothing slid past unseen. Other new records (runs that arrived at the head) are stored too,
//! but never trusted as a boundary.
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
//! - The history ends on a page asked for at a stored record that holds only it (once the API's
//!   page size was seen to vary, the third such page in a row), on two short pages in a row that
//!   end on the anchor (three when the size varies), or on an empty first page.
//! - Paging that reaches no further for [`MAX_STALLED`] answers fails the workflow.
//! - An API that refuses offsets that are not multiples of `limit` gets pages whose offset is a
//!   multiple of their own `limit`, still overlapping the anchor ([`aligned_request`]).
//!
//! Once pages come back full, the following pages are requested ahead of the answers, the
//! window doubling up to the caller's share of the concurrency; anything unexpected cancels the
//! requests ahead and paging continues from what is known.

mod answers;

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

/// Answers in a row after which the history reached no further before a workflow is failed:
/// runs arriving as fast as pages are read, or an API that loops. A burst of arrivals costs a
/// page per page of arrivals, a re-read search at most [`MAX_PROBES`].
pub const MAX_STALLED: u32 = 64;

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
    /// Records the page was expected to hold when it was planned.
    expect: u64,
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

/// What an answer held, in page order (three slices of one length).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// A fingerprint of each record (its run id's, or its text's).
    pub keys: &'a [u128],
    /// Each record's start time, when readable.
    pub starts: &'a [Option<i64>],
    /// Whether each record has a run id (its fingerprint is the id's); records without one are
    /// never joined on, since identical broken records share a fingerprint.
    pub has_id: &'a [bool],
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
    /// The history moved faster than it could be paged.
    #[error(
        "{pages} pages in a row reached no further into the history (past offset {offset}): runs arrive as fast as pages are read, or the API loops; this workflow's export is incomplete"
    )]
    Stalled {
        /// Answers in a row without reaching further.
        pages: u32,
        /// Offset of the last record known to be complete.
        offset: u64,
    },
    /// More pages than any history is paged with ([`MAX_PAGES`]): an API inventing runs.
    #[error(
        "{pages} pages read and the history has not ended: more than any export reads for one workflow (an API that never ends); this workflow's export is incomplete"
    )]
    TooManyPages {
        /// Answers received.
        pages: u64,
    },
    /// Runs vanished upstream and no re-read found where the history continues.
    #[error(
        "no page in {probes} re-reads around offset {offset} continued from the runs already read (runs vanished upstream, or arrived faster than pages are read); this workflow's export is incomplete"
    )]
    CannotRejoin {
        /// Offset of the last record known to be complete.
        offset: u64,
        /// Re-reads made.
        probes: u32,
    },
}

/// Answers one workflow's paging reads at most: 100 million runs at pages of 100; beyond it
/// the workflow fails ([`PagingError::TooManyPages`]).
pub const MAX_PAGES: u64 = 1_000_000;

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
    /// Whether it can be joined on (it has a unique run id); else pages are joined on it all
    /// the same, unchecked, since no record of the last page could be.
    checked: bool,
    /// Records after it in its page (without an id, so not anchors themselves).
    tail: usize,
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
    /// Keys that are never join points: of records without an id, and ids seen twice in a page.
    ambiguous: KeySet,
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
    /// The smallest page shorter than asked that records followed: a page shorter still is
    /// not a cut the API was seen to make.
    floor: Option<u64>,
    /// The size of the last page that ended at the frontier, and the `limit` it was asked for.
    frontier_page: Option<(u64, u64)>,
    /// A page shorter than asked that ended before the anchor's place (its size, its last
    /// offset): the anchor was purged, or the API cut it — which the anchor seen again past
    /// that offset shows.
    cut_before_anchor: Option<(u64, u64)>,
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
    /// The last record of the previous answer: a page ending on it again did not move.
    last_tail: Option<u128>,
    /// The answer being handled took the history further.
    advanced: bool,
    /// Answers in a row that did not.
    stalled: u32,
    previous_oldest: Option<i64>,
    outcome: Option<Result<(), PagingError>>,
    stats: PagingStats,
    /// [`MAX_PAGES`] (lower in tests).
    max_pages: u64,
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
            ambiguous: KeySet::default(),
            newest_old_start: None,
            anchor: None,
            trail: Vec::new(),
            trail_base: 0,
            stride: None,
            cap: None,
            caps_vary: false,
            floor: None,
            frontier_page: None,
            cut_before_anchor: None,
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
            last_tail: None,
            advanced: false,
            stalled: 0,
            previous_oldest: None,
            outcome: None,
            stats: PagingStats::default(),
            max_pages: MAX_PAGES,
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
            expect: self.expected(limit),
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
            // One record per page: a `limit` of 1 is aligned at any offset.
            return (at + 1, 1, true);
        }
        if !self.aligned {
            return (at.saturating_sub(margin), self.options.limit, false);
        }
        if self.end_votes > 0
            && margin == 0
            && let Some((offset, limit)) = confirming_request(at, full)
        {
            // Confirming an end: another page, the last record as near its start as can be, so
            // that only a cut just after it could hide what follows.
            return (offset, limit, false);
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
        if self.stats.pages > self.max_pages {
            self.outcome = Some(Err(PagingError::TooManyPages {
                pages: self.stats.pages,
            }));
            return verdict;
        }
        let received = n as u64;
        if self.cap.is_some_and(|cap| received > cap) {
            // A page larger than the cap shown before: the API's page size varies.
            self.caps_vary = true;
        }
        if received > 0 {
            let capped = received.min(self.options.limit);
            self.stride = Some(match (self.stride, request.kind) {
                (None, _) | (_, Kind::First) => received,
                (Some(s), _) => s.max(capped),
            });
        }
        let short = received < self.expected(request.limit);
        self.note_ambiguous(answer);
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
        self.last_tail = answer.keys.last().copied();
        self.count_stall();
        verdict
    }
}

/// The aligned page (`limit` 2…`full`) that holds offset `at` nearest its start, and the most
/// records after it: `(offset, limit)`.
fn confirming_request(at: u64, full: u64) -> Option<(u64, u64)> {
    (2..=full)
        .filter(|limit| at % limit + 2 <= *limit)
        .min_by_key(|limit| (at % limit, std::cmp::Reverse(*limit)))
        .map(|limit| (at - at % limit, limit))
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
