//! What one answer does to the pager: which records it stores, where the anchor moves, whether
//! it joins, lies before the frontier or past a gap, and whether it shows the end of the history.

use super::{
    Anchor, Answer, Class, Kind, MAX_PAGES_WITHOUT_NEWS, MAX_PROBES, MAX_STALLED, PageRequest,
    Pager, PagingError, Search, Verdict,
};
use crate::flatten::KeySet;

/// Where a page that brought nothing new ended, against the anchor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Before the anchor's place, once the API's page size was seen to vary.
    BeforeAnchor,
    /// On the anchor or a stored record.
    OnAnchor,
    /// On the anchor where it was stored, followed by the records stored after it.
    Unmoved,
}

/// What storing a page's unseen records did.
struct Stored {
    /// Records stored.
    news: u64,
    /// Of them, records after the join record: the history reached further.
    further: u64,
    /// Records stored by earlier pages, seen again.
    repeats: u64,
}

impl Pager {
    /// Whether `key` can be joined on: stored, there when paging began, and unique.
    fn is_old(&self, key: &u128) -> bool {
        self.seen.contains(key) && !self.arrivals.contains(key) && !self.ambiguous.contains(key)
    }

    /// Records the keys of `answer` that must never be join points: fingerprints of records
    /// without an id (two identical broken records share one), and ids repeated in one page.
    pub(super) fn note_ambiguous(&mut self, answer: Answer<'_>) {
        let mut in_page = KeySet::default();
        for (key, has_id) in answer.keys.iter().zip(answer.has_id) {
            if !has_id || !in_page.insert(*key) {
                self.ambiguous.insert(*key);
            }
        }
    }

    pub(super) fn classify(&self, answer: Answer<'_>) -> Class {
        let keys = answer.keys;
        if keys.is_empty() {
            return Class::Empty;
        }
        if let Some(a) = self.anchor
            && (!a.checked || !self.ambiguous.contains(&a.key))
            && let Some(at) = keys.iter().position(|k| *k == a.key)
        {
            return Class::Join { at, anchor: true };
        }
        if let Some(at) = keys.iter().rposition(|k| self.is_old(k)) {
            let unseen_after = keys[at + 1..].iter().any(|k| !self.seen.contains(k));
            return if unseen_after {
                Class::Join { at, anchor: false }
            } else {
                Class::AllSeen
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

    /// Marks the new records of `answer` stored (`verdict.keep`): those before record
    /// `first_new` as runs that arrived during paging, the others as continuing the history. A
    /// run id is stored once. A record without an id, whose fingerprint identical broken records
    /// share, is stored at each new place: after the join record and past the `reread`
    /// records after it that the last page ended with (`usize::MAX`: none is a new place unless
    /// unseen), or twice in one page.
    fn store(
        &mut self,
        answer: Answer<'_>,
        first_new: usize,
        reread: usize,
        verdict: &mut Verdict,
    ) -> Stored {
        let mut this_page = KeySet::default();
        let mut stored = Stored {
            news: 0,
            further: 0,
            repeats: 0,
        };
        let new_place_from = first_new.saturating_add(reread);
        for (i, key) in answer.keys.iter().enumerate() {
            let fresh = if self.seen.insert(*key) {
                this_page.insert(*key);
                true
            } else {
                !answer.has_id[i] && (this_page.contains(key) || i >= new_place_from)
            };
            if !fresh {
                stored.repeats += u64::from(!this_page.contains(key));
                continue;
            }
            this_page.insert(*key);
            verdict.keep[i] = true;
            stored.news += 1;
            if i < first_new {
                self.arrivals.insert(*key);
            } else {
                stored.further += 1;
                if let Some(start) = answer.starts[i] {
                    self.newest_old_start =
                        Some(self.newest_old_start.map_or(start, |s| s.max(start)));
                }
            }
        }
        stored
    }

    /// Stores the new records of a page that joins at record `at` (`usize::MAX`: the first page,
    /// or a page that cannot overlap, all of whose records continue the history).
    pub(super) fn accept_join(
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
        let mut vanished = 0;
        if let Some(observed) = join_offset {
            if at_anchor {
                self.anchor_seen_at(observed);
            }
            vanished = self.count_drift(answer.keys[at], observed, at_anchor, request.kind);
            let width = self.expected(self.options.limit);
            self.margin = if vanished > 0 {
                (self.margin.max(2 * vanished)).min(width / 4)
            } else {
                self.margin / 2
            };
        }
        let searched = self.search.take();
        // Joined on the anchor: the records without an id that ended its page come again.
        let reread = match (at_anchor, self.anchor) {
            (true, Some(a)) => a.tail,
            (true, None) | (false, _) if at == usize::MAX => 0,
            _ => usize::MAX,
        };
        let stored = self.store(answer, first_new, reread, verdict);
        verdict.repeats = match request.kind {
            Kind::Next { anchor_at } => stored.repeats.saturating_sub(anchor_at + 1 - o),
            Kind::Probe => 0,
            _ => stored.repeats,
        };
        // The anchor where it was stored and the records stored after it, nothing else.
        let unmoved = at_anchor
            && self
                .anchor
                .is_some_and(|a| a.offset == o + at as u64 && n == at + 1 + a.tail);
        self.move_anchor(answer, o, at, stored.further > 0);
        if stored.further == 0 {
            // Records were seen past the frontier while looking for it: not the end.
            let more = searched.is_some_and(|s| s.beyond);
            let look = if unmoved {
                Look::Unmoved
            } else {
                Look::OnAnchor
            };
            if !more && self.ends_here(n, request.limit, look) {
                self.outcome = Some(Ok(()));
                return;
            }
            // Nothing new: ask at the last record itself, which ends the history or goes on —
            // as many records before it as just vanished above it, which may vanish again
            // before the next answer (a page of them alone still shows the end).
            self.margin = vanished;
        } else {
            self.records_follow();
            self.advanced = true;
        }
        self.frontier_page = Some((n as u64, request.limit));
        // A short page with nothing new is a look at the end, not a page that fails to move
        // (those are whole pages: an API that ignores `offset`); the stall count bounds them.
        if self.no_progress(stored.news + u64::from(short), o) {
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
        // Pages of one record are read one at a time, as before anything was known.
        let expected_join = self.expected(self.options.limit) > 1
            && (request.kind == Kind::First
                || (matches!(request.kind, Kind::Next { .. }) && at_anchor));
        // A page longer than planned leaves the pages requested ahead before its end.
        let as_planned = !short && n as u64 <= request.expect;
        if as_planned && expected_join && searched.is_none() {
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

    /// The anchor after a page joined at `at` (`usize::MAX`: from its start) was stored: its
    /// last record that can be joined on (its last record when none can, then unchecked),
    /// where it was seen; and the stretch stored from the join record on.
    fn move_anchor(&mut self, answer: Answer<'_>, o: u64, at: usize, further: bool) {
        let keys = answer.keys;
        let Some(last) = keys.len().checked_sub(1) else {
            return;
        };
        let from = if at == usize::MAX { 0 } else { at };
        let joinable = (from..=last)
            .rev()
            .find(|&i| answer.has_id[i] && !self.ambiguous.contains(&keys[i]));
        let index = joinable.unwrap_or(last);
        self.anchor = Some(Anchor {
            key: keys[index],
            offset: o + index as u64,
            checked: joinable.is_some(),
            tail: last - index,
        });
        if further {
            self.trail = keys[from..].to_vec();
            self.trail_base = o + from as u64;
        } else if let Some(k) = self.trail.iter().position(|key| *key == keys[index]) {
            // Nothing new: the stored stretch was seen again, ending here.
            self.trail_base = (o + index as u64).saturating_sub(k as u64);
        }
    }

    /// The anchor is still there, at `observed`: a short page that ended before it was the
    /// API's cut, not the end — its page size varies, and the votes it cast do not count.
    fn anchor_seen_at(&mut self, observed: u64) {
        if let Some((len, end)) = self.cut_before_anchor.take()
            && observed > end
        {
            self.caps_vary = true;
            self.floor = Some(self.floor.map_or(len, |floor| floor.min(len)));
            self.end_votes = 0;
        }
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

    /// A page of stored records (the frontier is further on), or of runs that arrived.
    pub(super) fn accept_before(
        &mut self,
        request: &PageRequest,
        answer: Answer<'_>,
        class: Class,
        verdict: &mut Verdict,
    ) {
        let n = answer.keys.len();
        // Unseen records here are runs that arrived (or an API that reorders): stored, never
        // joined on.
        let stored = self.store(answer, usize::MAX, usize::MAX, verdict);
        if class == Class::AllSeen && request.kind != Kind::Probe {
            self.stats.shifts += 1;
            verdict.repeats = stored.repeats.saturating_sub(request.overlap);
        }
        let more = self.search.is_some_and(|s| s.beyond);
        let end = request.offset + n as u64 - 1;
        // Where the API's page size varies, a short page that ends before where the anchor was
        // may be its cut; otherwise a short page shows the end (the history may have shrunk
        // below the anchor's place: purged from the tail).
        let reaches_anchor = self.anchor.is_some_and(|a| end >= a.offset);
        if class == Class::AllSeen && !reaches_anchor && (n as u64) < request.limit {
            self.cut_before_anchor = Some((n as u64, end));
        }
        let look = if self.caps_vary && !reaches_anchor {
            Look::BeforeAnchor
        } else {
            Look::OnAnchor
        };
        if class == Class::AllSeen && !more && self.ends_here(n, request.limit, look) {
            // Nothing after these records: the history ends before the anchor, which was
            // deleted (purged from the tail) with what followed it.
            self.stats.vanished += 1;
            self.outcome = Some(Ok(()));
            return;
        }
        self.margin = 0;
        let width = self.expected(self.options.limit);
        match (&mut self.search, class) {
            (Some(search), Class::Arrivals) if search.lo.is_some_and(|lo| end <= lo) => {
                // The same records again, no further on: they did not arrive, they lie past a
                // gap (their start times mislead): step back from here.
                search.hi = Some(request.offset.min(search.hi.unwrap_or(u64::MAX)));
                search.lo = None;
                self.search_budget(request);
            }
            (Some(search), _) => {
                search.lo = Some(search.lo.map_or(end, |lo| lo.max(end)));
                if search.hi.is_some_and(|hi| hi <= end) {
                    search.hi = None;
                }
                self.search_budget(request);
            }
            (None, Class::Arrivals) => {
                // Runs arrived, more than a page of them: the frontier is further on. Looked
                // for like a gap, from here on, so that records that only look new (a late
                // start) cannot end or skip anything.
                verdict.cancel = !self.in_flight.is_empty();
                self.in_flight.clear();
                self.search = Some(Search {
                    lo: Some(end),
                    back: (width / 2).max(1),
                    ..Search::default()
                });
            }
            (None, _) => {
                // A page that does not move on (the same last record again) brings no news.
                let moving = self.last_tail != answer.keys.last().copied();
                if self.no_progress(stored.news + u64::from(moving), request.offset) {
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
    pub(super) fn lost_track(
        &mut self,
        request: &PageRequest,
        held_records: bool,
        verdict: &mut Verdict,
    ) {
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

    /// Whether a page of `n` records asked with `limit`, all stored and ending on a stored
    /// record, shows that the history ends there. A page of that one record does (unless the
    /// API cut it to one). A page shorter than a full one — once the API's page size was seen to
    /// vary, shorter than any cut it was seen to make — counts, and the second such page in a
    /// row ends the history, the third once the size varies: one is not enough, as an API may
    /// cut a page just there, and runs arriving at the head push the last record down a page
    /// started at it. A page that ends before the anchor's place once cuts vary counts only
    /// if it holds one record; a page that is the anchor and its stored tail, unmoved, counts
    /// even if as long as the largest page seen (a history of one page ending in records
    /// without an id) while shorter than asked and than any cut seen.
    fn ends_here(&mut self, n: usize, limit: u64, look: Look) -> bool {
        let n = n as u64;
        if n == 1 && limit > 1 {
            return true;
        }
        if look == Look::BeforeAnchor {
            return false; // says nothing either way
        }
        // Shorter than any cut the API was seen to make (when its cuts vary).
        let below_floor = self.caps_vary && self.floor.is_some_and(|floor| n < floor);
        let full = match look {
            Look::Unmoved => limit.min(self.cap.map_or(limit, |cap| cap)),
            _ => limit.min(self.cap.or(self.stride).unwrap_or(limit)),
        };
        if n >= full {
            self.end_votes = 0;
            return false;
        }
        if self.caps_vary && !below_floor {
            return false; // may be a cut
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
            self.floor = Some(self.floor.map_or(len, |floor| floor.min(len)));
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

    /// Counts an answer after which the history reached no further; fails the workflow when
    /// that goes on (runs arriving as fast as pages are read, or an API that loops).
    pub(super) fn count_stall(&mut self) {
        if std::mem::take(&mut self.advanced) {
            self.stalled = 0;
            return;
        }
        self.stalled += 1;
        if self.stalled >= MAX_STALLED && self.outcome.is_none() {
            self.outcome = Some(Err(PagingError::Stalled {
                pages: self.stalled,
                offset: self.anchor.map_or(0, |a| a.offset),
            }));
        }
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
