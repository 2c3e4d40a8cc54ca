//! The paging core driven through histories that change while they are paged, with answers
//! snapshotted out of order, against APIs that cap, ignore or restrict offsets. No server, no
//! clock: a model history and a seeded generator.

use std::collections::{BTreeSet, VecDeque};

use super::*;

/// A history, newest first. Record `k` started at `k` ms: newer records have larger keys.
#[derive(Debug, Clone)]
struct History {
    records: Vec<u128>,
    next: u128,
}

impl History {
    fn new(runs: usize) -> Self {
        Self {
            records: (0..runs as u128).rev().collect(),
            next: runs as u128,
        }
    }

    fn ids(&self) -> BTreeSet<u128> {
        self.records.iter().copied().collect()
    }

    fn insert(&mut self, n: u64) {
        for _ in 0..n {
            self.records.insert(0, self.next);
            self.next += 1;
        }
    }

    fn purge(&mut self, n: u64) {
        let keep = self.records.len().saturating_sub(n as usize);
        self.records.truncate(keep);
    }

    /// Deletes `n` records at random positions before `below`.
    fn delete_above(&mut self, n: u64, below: u64, rng: &mut Rng) {
        for _ in 0..n {
            let end = (below as usize).min(self.records.len());
            if end == 0 {
                return;
            }
            self.records.remove(rng.below(end as u64) as usize);
        }
    }
}

fn start_of(key: u128) -> Option<i64> {
    Some(key as i64 * 1000)
}

/// xorshift64*: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How the simulated API answers.
#[derive(Debug, Clone, Copy, Default)]
struct Api {
    /// Pages hold at most a number of records drawn from this range for each request.
    cap: Option<(u64, u64)>,
    /// Every offset answers as offset 0.
    ignores_offset: bool,
    /// Every offset but 0 answers as this one.
    same_page: Option<u64>,
    /// Offsets that are not multiples of `limit` are refused.
    aligned_only: bool,
}

impl Api {
    /// The page for a request, or `None` when it is refused.
    fn answer(&self, h: &History, r: &PageRequest, rng: &mut Rng) -> Option<Vec<u128>> {
        if self.aligned_only && !r.offset.is_multiple_of(r.limit) {
            return None;
        }
        let cap = match self.cap {
            Some((lo, hi)) => lo + rng.below(hi - lo + 1),
            None => r.limit,
        };
        let offset = match (self.ignores_offset, self.same_page) {
            (true, _) => 0,
            (false, Some(fixed)) if r.offset > 0 => fixed,
            _ => r.offset,
        };
        Some(
            h.records
                .iter()
                .skip(offset as usize)
                .take(cap.min(r.limit) as usize)
                .copied()
                .collect(),
        )
    }
}

/// Which request in flight the API answers next (the shell still hands answers to the pager
/// in request order, as `FuturesOrdered` does).
#[derive(Debug, Clone, Copy)]
enum Order {
    Sequential,
    NewestFirst,
    Random,
}

/// How the history changes after each answer.
#[derive(Debug, Clone, Copy, Default)]
struct Drift {
    insert: u64,
    /// Deleted at random above the offset of the request just answered.
    delete_above: u64,
    purge: u64,
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    runs: usize,
    limit: u64,
    window: usize,
    api: Api,
    order: Order,
    drift: Drift,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            runs: 1000,
            limit: 50,
            window: 8,
            api: Api::default(),
            order: Order::Sequential,
            drift: Drift::default(),
        }
    }
}

#[derive(Debug)]
struct Run {
    /// Keys stored, in the order stored (repeats would show here).
    stored: Vec<u128>,
    result: Result<(), PagingError>,
    requests: u64,
    stats: PagingStats,
    before: BTreeSet<u128>,
    after: History,
}

/// Pages `setup`'s history to the end; `script` may change it after answer `n` (0-based).
fn drive(setup: Setup, seed: u64, mut script: impl FnMut(&mut History, u64)) -> Run {
    let mut history = History::new(setup.runs);
    let before = history.ids();
    let mut rng = Rng::new(seed);
    let mut pager = Pager::new(PagerOptions {
        limit: setup.limit,
        max_window: setup.window,
        stop_before: None,
    });
    let mut pending: VecDeque<(PageRequest, Option<Option<Vec<u128>>>)> = VecDeque::new();
    let (mut stored, mut requests) = (Vec::new(), 0u64);
    let result = loop {
        assert!(
            requests < 20_000,
            "paging does not end: {:?}",
            pager.stats()
        );
        let step = loop {
            match pager.poll(setup.window) {
                Poll::Send(r) => pending.push_back((r, None)),
                Poll::Wait => break None,
                Poll::Done => break Some(Ok(())),
                Poll::Failed(e) => break Some(Err(e)),
            }
        };
        if let Some(result) = step {
            break result;
        }
        let unanswered: Vec<usize> = (0..pending.len())
            .filter(|i| pending[*i].1.is_none())
            .collect();
        let pick = match setup.order {
            Order::Sequential => unanswered[0],
            Order::NewestFirst => *unanswered.last().unwrap(),
            Order::Random => unanswered[rng.below(unanswered.len() as u64) as usize],
        };
        let request = pending[pick].0;
        pending[pick].1 = Some(setup.api.answer(&history, &request, &mut rng));
        script(&mut history, requests);
        requests += 1;
        let d = setup.drift;
        history.insert(d.insert);
        history.delete_above(d.delete_above, request.offset, &mut rng);
        history.purge(d.purge);
        while pending.front().is_some_and(|(_, a)| a.is_some()) {
            let (request, answer) = pending.pop_front().unwrap();
            let Some(records) = answer.unwrap() else {
                assert_eq!(
                    pager.on_refused(request.id),
                    Refusal::Aligned,
                    "{request:?}"
                );
                pending.clear();
                break;
            };
            let starts: Vec<Option<i64>> = records.iter().map(|k| start_of(*k)).collect();
            let has_id = vec![true; records.len()];
            let answer = Answer {
                keys: &records,
                starts: &starts,
                has_id: &has_id,
            };
            let class = pager.classify(answer);
            let verdict = pager.on_page(request.id, answer);
            // `PAGING_TRACE=1` prints every answer and what the pager made of it.
            if std::env::var_os("PAGING_TRACE").is_some() {
                let kept = verdict.keep.iter().filter(|k| **k).count();
                eprintln!(
                    "{request:?} n {} {:?}..{:?} {class:?} kept {kept} cancel {} anchor {:?}",
                    records.len(),
                    records.first(),
                    records.last(),
                    verdict.cancel,
                    pager.anchor.map(|a| (a.key, a.offset)),
                );
            }
            stored.extend(
                records
                    .iter()
                    .zip(&verdict.keep)
                    .filter(|(_, k)| **k)
                    .map(|(r, _)| *r),
            );
            if verdict.cancel {
                pending.clear();
            }
        }
    };
    Run {
        stored,
        result,
        requests,
        stats: pager.stats().clone(),
        before,
        after: history,
    }
}

/// Records that existed for the whole paging and were not stored.
fn lost(run: &Run) -> Vec<u128> {
    let stored: BTreeSet<_> = run.stored.iter().copied().collect();
    let after = run.after.ids();
    run.before
        .intersection(&after)
        .filter(|k| !stored.contains(*k))
        .copied()
        .collect()
}

/// Every record that existed for the whole paging is stored, each record at most once, and
/// nothing is stored that the history never held.
fn assert_complete(run: &Run, what: &str) {
    assert_eq!(run.result, Ok(()), "{what}: {:?}", run.stats);
    let mut once = BTreeSet::new();
    for key in &run.stored {
        assert!(once.insert(*key), "{what}: record {key} stored twice");
        assert!(*key < run.after.next, "{what}: record {key} never existed");
    }
    let lost = lost(run);
    assert!(
        lost.is_empty(),
        "{what}: {} records lost: {lost:?} ({:?})",
        lost.len(),
        run.stats
    );
}

#[test]
fn changing_histories_are_stored_exactly_once_whatever_the_api_and_answer_order() {
    let arrivals = Drift {
        insert: 3,
        ..Drift::default()
    };
    let deletions = Drift {
        delete_above: 2,
        ..Drift::default()
    };
    let both = Drift {
        insert: 2,
        delete_above: 3,
        purge: 0,
    };
    let purges = Drift {
        purge: 5,
        insert: 1,
        ..Drift::default()
    };
    let cap = |lo, hi| Api {
        cap: Some((lo, hi)),
        ..Api::default()
    };
    let aligned = Api {
        aligned_only: true,
        ..Api::default()
    };
    let cases: &[(&str, Setup)] = &[
        ("steady history", Setup::default()),
        (
            "arrivals at the head",
            Setup {
                drift: arrivals,
                ..Setup::default()
            },
        ),
        (
            "deletions above the offset",
            Setup {
                drift: deletions,
                ..Setup::default()
            },
        ),
        (
            "deletions at the tail",
            Setup {
                drift: purges,
                ..Setup::default()
            },
        ),
        (
            "arrivals and deletions in one interval",
            Setup {
                drift: both,
                ..Setup::default()
            },
        ),
        (
            "constant page cap",
            Setup {
                api: cap(30, 30),
                drift: both,
                limit: 100,
                ..Setup::default()
            },
        ),
        (
            "varying page cap",
            Setup {
                api: cap(20, 60),
                drift: both,
                limit: 100,
                ..Setup::default()
            },
        ),
        (
            "answers newest request first",
            Setup {
                order: Order::NewestFirst,
                drift: arrivals,
                ..Setup::default()
            },
        ),
        (
            "answers in random order",
            Setup {
                order: Order::Random,
                drift: both,
                ..Setup::default()
            },
        ),
        (
            "aligned offsets only",
            Setup {
                api: aligned,
                ..Setup::default()
            },
        ),
        (
            "aligned offsets only, drifting",
            Setup {
                api: aligned,
                order: Order::Random,
                drift: both,
                ..Setup::default()
            },
        ),
        (
            "aligned offsets only, capped",
            Setup {
                api: Api {
                    cap: Some((30, 30)),
                    aligned_only: true,
                    ..Api::default()
                },
                drift: deletions,
                limit: 100,
                ..Setup::default()
            },
        ),
        (
            "one page at a time",
            Setup {
                window: 1,
                drift: both,
                ..Setup::default()
            },
        ),
        (
            "pages of two",
            Setup {
                limit: 2,
                runs: 120,
                drift: Drift {
                    purge: 1,
                    ..Drift::default()
                },
                ..Setup::default()
            },
        ),
    ];
    // `PAGING_SEEDS=3000 cargo test --release --lib extract::paging` for a longer run.
    let seeds: u64 = std::env::var("PAGING_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    for (name, setup) in cases {
        let mut requests = 0;
        for seed in 0..seeds {
            let run = drive(*setup, seed, |_, _| {});
            assert_complete(&run, &format!("{name}, seed {seed}"));
            assert!(run.stats.unchecked == 0, "{name}: {:?}", run.stats);
            requests += run.requests;
        }
        // Drift costs re-reads, never a runaway: within 3× a steady history's requests.
        let steady = seeds
            * (setup.runs as u64 / (setup.limit.min(setup.api.cap.map_or(u64::MAX, |c| c.0)) - 1)
                + 2);
        assert!(
            requests <= 3 * steady,
            "{name}: {requests} requests (steady {steady})"
        );
    }
}

#[test]
fn what_paging_detects_is_counted() {
    let counted = |drift: Drift, order: Order| {
        let setup = Setup {
            drift,
            order,
            ..Setup::default()
        };
        let run = drive(setup, 3, |_, _| {});
        assert_complete(&run, &format!("{drift:?}"));
        run.stats
    };
    let arrivals = counted(
        Drift {
            insert: 3,
            ..Drift::default()
        },
        Order::Random,
    );
    assert!(
        arrivals.shifts > 0 && arrivals.vanished == 0,
        "{arrivals:?}"
    );
    let deletions = counted(
        Drift {
            delete_above: 2,
            ..Drift::default()
        },
        Order::Sequential,
    );
    assert!(
        deletions.vanished > 0 && deletions.rereads > 0,
        "{deletions:?}"
    );
    assert_eq!(deletions.shifts, 0, "{deletions:?}");
    let steady = counted(Drift::default(), Order::Sequential);
    assert_eq!(
        (steady.shifts, steady.rereads, steady.vanished),
        (0, 0, 0),
        "{steady:?}"
    );
}

#[test]
fn an_anchor_deleted_upstream_joins_on_the_record_before_it() {
    let setup = Setup {
        runs: 300,
        limit: 100,
        window: 1,
        ..Setup::default()
    };
    // After the first page is answered, its last record (the anchor) is deleted.
    let run = drive(setup, 0, |h, n| {
        if n == 0 {
            h.records.remove(99);
        }
    });
    assert_complete(&run, "anchor deleted");
    assert_eq!(run.stats.vanished, 1, "{:?}", run.stats);
    assert!(run.stats.rereads >= 1, "{:?}", run.stats);
}

#[test]
fn runs_sliding_past_a_page_boundary_are_found_by_stepping_back() {
    // 40 records above the next page's start vanish between two answers: the next page starts
    // 40 records past the anchor.
    let setup = Setup {
        runs: 600,
        limit: 100,
        window: 1,
        ..Setup::default()
    };
    let run = drive(setup, 0, |h, n| {
        if n == 1 {
            h.records.drain(20..60);
        }
    });
    assert_complete(&run, "40 vanished above");
    assert_eq!(run.stats.vanished, 40, "{:?}", run.stats);
}

#[test]
fn a_history_whose_stored_runs_all_vanished_fails_loudly() {
    let setup = Setup {
        runs: 500,
        limit: 100,
        window: 1,
        ..Setup::default()
    };
    // Everything read so far is deleted upstream: nothing can be joined on.
    let run = drive(setup, 0, |h, n| {
        if n == 0 {
            h.records.drain(0..100);
        }
    });
    assert!(
        matches!(run.result, Err(PagingError::CannotRejoin { .. })),
        "{:?}",
        run.result
    );
    let message = run.result.unwrap_err().to_string();
    assert!(message.contains("export is incomplete"), "{message}");
}

#[test]
fn the_end_of_history_costs_one_request_past_the_last_page() {
    // (runs, limit, requests) with one page at a time: pages overlap by one record, and the
    // end is shown by a page asked at the last record that holds only it.
    let cases = [
        (0, 100, 1),   // an empty history
        (1, 100, 2),   // one record: pages of one record cannot overlap; an empty page ends
        (10, 100, 2),  // a short first page, then the page holding only its last record
        (100, 100, 2), // an exact page
        (199, 100, 3), // two pages overlapping by one: an exact multiple of 99 + 1
        (250, 100, 4), // a short last page
    ];
    for (runs, limit, want) in cases {
        let setup = Setup {
            runs,
            limit,
            window: 1,
            ..Setup::default()
        };
        let run = drive(setup, 0, |_, _| {});
        assert_complete(&run, &format!("{runs} runs"));
        assert_eq!(run.stored.len(), runs, "{runs} runs");
        assert_eq!(run.requests, want, "{runs} runs by {limit}");
    }
}

#[test]
fn apis_that_do_not_page_fail_instead_of_looping() {
    for (name, api) in [
        (
            "ignores offset",
            Api {
                ignores_offset: true,
                ..Api::default()
            },
        ),
        (
            "same page for every offset",
            Api {
                same_page: Some(30),
                ..Api::default()
            },
        ),
    ] {
        let setup = Setup {
            api,
            window: 4,
            ..Setup::default()
        };
        let run = drive(setup, 0, |_, _| {});
        assert!(
            matches!(run.result, Err(PagingError::NoProgress { .. })),
            "{name}: {:?}",
            run.result
        );
        assert!(run.requests <= 12, "{name}: {} requests", run.requests);
        assert!(run.stored.len() <= 100, "{name}");
    }
}

#[test]
fn an_aligned_only_api_is_paged_with_aligned_pages_after_one_refusal() {
    let setup = Setup {
        api: Api {
            aligned_only: true,
            ..Api::default()
        },
        runs: 1000,
        limit: 100,
        window: 1,
        ..Setup::default()
    };
    let run = drive(setup, 0, |_, _| {});
    assert_complete(&run, "aligned");
    assert!(run.stats.aligned);
    // One refused request, then pages of 95–100 records: about 11 pages for 1000 records.
    assert!(run.requests <= 14, "{} requests", run.requests);
}

#[test]
fn aligned_requests_overlap_the_anchor_with_the_fewest_records() {
    for (at, full, want) in [
        (0, 100, Some((0, 100))),
        (99, 100, Some((99, 99))),
        (197, 100, Some((196, 98))),
        (5, 4, Some((4, 4))),
        (11, 4, None), // 12 is a multiple of 2, 3 and 4: every page starts or ends there
        (1, 2, None),
    ] {
        assert_eq!(aligned_request(at, full), want, "at {at}, pages of {full}");
    }
    let mut rng = Rng::new(9);
    let (mut past, mut possible) = (0, 0);
    for _ in 0..2000 {
        let (at, full) = (rng.below(10_000_000), 50 + rng.below(1000));
        let (offset, limit) = aligned_request(at, full).unwrap();
        assert_eq!(offset % limit, 0);
        assert!(
            limit <= full && offset <= at && at + 1 < offset + limit,
            "{at} {full}"
        );
        past += offset + limit - at - 1;
        possible += full - 1;
    }
    // Pages of 50 or more: aligned pages bring on average over 80% of an unaligned page's news.
    assert!(past * 10 >= possible * 8, "{past} of {possible}");
}

#[test]
fn incremental_paging_stops_after_a_page_older_than_the_cursor() {
    let mut pager = Pager::new(PagerOptions {
        limit: 10,
        max_window: 4,
        stop_before: Some(start_of(75).unwrap()),
    });
    let history = History::new(100);
    let mut requests = 0;
    loop {
        match pager.poll(4) {
            Poll::Send(r) => {
                requests += 1;
                let records: Vec<u128> = history
                    .records
                    .iter()
                    .skip(r.offset as usize)
                    .take(10)
                    .copied()
                    .collect();
                let starts: Vec<_> = records.iter().map(|k| start_of(*k)).collect();
                pager.on_page(
                    r.id,
                    Answer {
                        keys: &records,
                        starts: &starts,
                        has_id: &vec![true; records.len()],
                    },
                );
            }
            Poll::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(pager.stats().stopped_at_cursor);
    // Pages 99–90, 90–81, 81–72 (the first whose newest run is below 75 is 72–63).
    assert!(requests <= 5, "{requests}");
    assert!(pager.seen().contains(&72));
}

/// Pages a history one page at a time, the API cutting pages at `cap`; `between(history, n)`
/// changes it after answer `n`; `start` gives each record's start time and `has_id` whether
/// it has a run id. Returns what was stored and how paging ended.
fn page_one_at_a_time(
    mut history: Vec<u128>,
    limit: u64,
    cap: usize,
    start: impl Fn(u128) -> Option<i64>,
    has_id: impl Fn(u128) -> bool,
    mut between: impl FnMut(&mut Vec<u128>, u64),
) -> (Vec<u128>, Result<(), PagingError>, Vec<u128>) {
    let mut pager = Pager::new(PagerOptions {
        limit,
        max_window: 1,
        stop_before: None,
    });
    let (mut stored, mut n) = (Vec::new(), 0);
    let result = loop {
        assert!(n < 10_000, "paging does not end: {:?}", pager.stats());
        let request = match pager.poll(1) {
            Poll::Send(r) => r,
            Poll::Done => break Ok(()),
            Poll::Failed(e) => break Err(e),
            Poll::Wait => unreachable!("one page at a time"),
        };
        let keys: Vec<u128> = history
            .iter()
            .skip(request.offset as usize)
            .take(cap.min(request.limit as usize))
            .copied()
            .collect();
        let starts: Vec<_> = keys.iter().map(|k| start(*k)).collect();
        let ids: Vec<bool> = keys.iter().map(|k| has_id(*k)).collect();
        let answer = Answer {
            keys: &keys,
            starts: &starts,
            has_id: &ids,
        };
        let verdict = pager.on_page(request.id, answer);
        stored.extend(
            keys.iter()
                .zip(&verdict.keep)
                .filter(|(_, k)| **k)
                .map(|(r, _)| *r),
        );
        between(&mut history, n);
        n += 1;
    };
    (stored, result, history)
}

#[test]
fn a_lone_record_with_a_late_start_past_a_gap_is_not_the_end() {
    // 150 runs by 100; after the first page the 50 runs above the anchor are deleted, so the
    // next page holds only the oldest run, whose start is later than every stored run's (a run
    // queued long before it started): it looks like an arrival, but the 49 runs that slid
    // above it must be found.
    let history: Vec<u128> = (0..150).rev().collect();
    let start = |k: u128| Some(if k == 0 { 1_000_000 } else { k as i64 });
    let (stored, result, _) = page_one_at_a_time(
        history,
        100,
        100,
        start,
        |_| true,
        |h, n| {
            if n == 0 {
                h.retain(|k| !(51..=100).contains(k));
            }
        },
    );
    assert_eq!(result, Ok(()));
    let lost: Vec<u128> = (0..=50).filter(|k| !stored.contains(k)).collect();
    assert!(lost.is_empty(), "{lost:?}");
}

#[test]
fn identical_records_without_an_id_are_never_joined_on_and_both_kept() {
    // Two identical broken records (one fingerprint) at 99, the anchor's place, and at 150;
    // after the first page 10 runs at the head are deleted.
    const Q: u128 = 1 << 100;
    let mut history: Vec<u128> = (0..300).rev().collect();
    history[99] = Q;
    history[150] = Q;
    let start = |k: u128| (k != Q).then_some(k as i64);
    let (stored, result, after) = page_one_at_a_time(
        history,
        100,
        100,
        start,
        |k| k != Q,
        |h, n| {
            if n == 0 {
                h.drain(0..10);
            }
        },
    );
    assert_eq!(result, Ok(()));
    let lost: Vec<&u128> = after
        .iter()
        .filter(|k| **k != Q && !stored.contains(k))
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        stored.iter().filter(|k| **k == Q).count(),
        2,
        "both broken records kept"
    );
}

#[test]
fn bursts_of_arrivals_are_stored_or_the_workflow_fails_loudly() {
    // (what, runs, the API's cap at limit 100, runs arriving after answer n, completes)
    type Burst = (&'static str, u128, usize, fn(u64) -> usize, bool);
    let cases: [Burst; 3] = [
        // 40 runs arrive after each of the first two answers, before the cap has shown itself.
        (
            "under a cap not yet known",
            1000,
            30,
            |n| if n < 2 { 40 } else { 0 },
            true,
        ),
        // Six pages' worth at once: paging walks through pages it has stored already, which is
        // progress, not an API that ignores `offset`.
        (
            "six pages at once",
            5000,
            100,
            |n| if n == 20 { 600 } else { 0 },
            true,
        ),
        // A history growing faster than it is read never ends: the workflow fails.
        ("faster than pages are read", 1000, 100, |_| 120, false),
    ];
    for (what, runs, cap, arriving, completes) in cases {
        let mut next = runs;
        let (stored, result, _) = page_one_at_a_time(
            (0..runs).rev().collect(),
            100,
            cap,
            |k| Some(k as i64),
            |_| true,
            |h, n| {
                for _ in 0..arriving(n) {
                    h.insert(0, next);
                    next += 1;
                }
            },
        );
        if completes {
            assert_eq!(result, Ok(()), "{what}");
            let lost = (0..runs).filter(|k| !stored.contains(k)).count();
            assert_eq!(lost, 0, "{what}");
        } else {
            assert!(
                matches!(
                    result,
                    Err(PagingError::Stalled { .. } | PagingError::CannotRejoin { .. })
                ),
                "{what}: {result:?}"
            );
        }
    }
}

#[test]
fn an_aligned_only_api_with_a_one_run_history_is_read() {
    let mut pager = Pager::new(PagerOptions {
        limit: 100,
        max_window: 1,
        stop_before: None,
    });
    let history = [7u128];
    let mut refusals = 0;
    loop {
        match pager.poll(1) {
            Poll::Send(r) if !r.offset.is_multiple_of(r.limit) => {
                refusals += 1;
                assert_eq!(pager.on_refused(r.id), Refusal::Aligned, "{r:?}");
            }
            Poll::Send(r) => {
                let keys: Vec<u128> = history
                    .iter()
                    .skip(r.offset as usize)
                    .take(r.limit as usize)
                    .copied()
                    .collect();
                let starts = vec![Some(7); keys.len()];
                let has_id = vec![true; keys.len()];
                pager.on_page(
                    r.id,
                    Answer {
                        keys: &keys,
                        starts: &starts,
                        has_id: &has_id,
                    },
                );
            }
            Poll::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        refusals, 0,
        "pages of one record ask `limit=1`, aligned at any offset"
    );
    assert!(pager.seen().contains(&7));
}

/// Every record that existed for the whole paging is stored exactly once, unless paging failed
/// (loudly: the workflow fails and its state does not advance).
fn assert_complete_or_failed(run: &Run, what: &str) -> bool {
    if run.result.is_err() {
        return false;
    }
    assert_complete(run, what);
    true
}

#[test]
fn caps_that_vary_down_to_two_records_and_tiny_aligned_pages_never_lose_silently() {
    let seeds: u64 = std::env::var("PAGING_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let both = Drift {
        insert: 1,
        delete_above: 1,
        purge: 0,
    };
    let cases: &[(&str, Setup)] = &[
        (
            "caps of 2 to 100",
            Setup {
                api: Api {
                    cap: Some((2, 100)),
                    ..Api::default()
                },
                limit: 100,
                runs: 600,
                order: Order::Random,
                ..Setup::default()
            },
        ),
        (
            "caps of 2 to 100, drifting",
            Setup {
                api: Api {
                    cap: Some((2, 100)),
                    ..Api::default()
                },
                limit: 100,
                runs: 600,
                drift: both,
                ..Setup::default()
            },
        ),
        (
            "aligned pages of 10, caps of 5 to 10",
            Setup {
                api: Api {
                    cap: Some((5, 10)),
                    aligned_only: true,
                    ..Api::default()
                },
                limit: 10,
                runs: 200,
                window: 1,
                order: Order::Random,
                ..Setup::default()
            },
        ),
        (
            "aligned pages of 10, caps of 2 to 10",
            Setup {
                api: Api {
                    cap: Some((2, 10)),
                    aligned_only: true,
                    ..Api::default()
                },
                limit: 10,
                runs: 200,
                window: 1,
                order: Order::Random,
                ..Setup::default()
            },
        ),
    ];
    for (name, setup) in cases {
        // Aligned pages of 10 cut down to 2 cannot prove where a history ends when its last
        // record sits at an offset no aligned page of 3 or more starts at: most such workflows
        // fail, loudly, and a few end early (1.25% of 2,000 seeds) — the documented limit.
        let unprovable = setup.api.aligned_only && setup.api.cap.is_some_and(|(lo, _)| lo < 3);
        let (mut completed, mut ended_early) = (0, 0);
        for seed in 0..seeds {
            let run = drive(*setup, seed, |_, _| {});
            let what = format!("{name}, seed {seed}");
            if unprovable && run.result.is_ok() && !lost(&run).is_empty() {
                ended_early += 1;
                continue;
            }
            completed += u64::from(assert_complete_or_failed(&run, &what));
        }
        eprintln!("{name}: {completed} of {seeds} complete, {ended_early} ended early");
        // Where the API cuts pages to any size the end can be unprovable: such a workflow
        // fails, loudly; most complete.
        let share = if unprovable { 10 } else { 2 };
        assert!(
            completed * share >= seeds,
            "{name}: {completed} of {seeds} completed"
        );
        assert!(
            ended_early * 50 <= seeds,
            "{name}: {ended_early} of {seeds} ended early"
        );
    }
}

#[test]
fn an_api_that_never_ends_fails_after_the_most_pages_any_history_takes() {
    // Every offset holds runs never seen, older and older: a history without end.
    let mut pager = Pager::new(PagerOptions {
        limit: 10,
        max_window: 4,
        stop_before: None,
    });
    pager.max_pages = 50;
    let result = loop {
        let request = match pager.poll(1) {
            Poll::Send(r) => r,
            Poll::Done => break Ok(()),
            Poll::Failed(e) => break Err(e),
            Poll::Wait => unreachable!("answered at once"),
        };
        let keys: Vec<u128> = (request.offset..request.offset + request.limit)
            .map(|i| u128::from(u64::MAX - i))
            .collect();
        let starts: Vec<_> = keys.iter().map(|k| Some(*k as i64)).collect();
        let ids = vec![true; keys.len()];
        pager.on_page(
            request.id,
            Answer {
                keys: &keys,
                starts: &starts,
                has_id: &ids,
            },
        );
    };
    assert_eq!(result, Err(PagingError::TooManyPages { pages: 51 }));
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("export is incomplete"),
        "a clear error"
    );
}
