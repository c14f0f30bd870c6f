//! The handshake between a connection's driver and the threads that post to it (issue #22,
//! defect 2).
//!
//! The driver's connection has one thread at a time driving it. With nothing to do (a request
//! with an application, no deadline due) the driver parks and returns. Others post to it: an
//! application's answer, the client's FIN seen by a disconnect event. A poster that finds the
//! connection parked un-parks it and becomes its driver (queues its work item); one that finds
//! it running leaves the post for the driver, which must see it before it parks.
//!
//! The first version kept `parked` and "something posted" in separate atomics: the driver
//! stored `parked` and then loaded the mailbox, the poster stored the mail and then swapped
//! `parked`. With release/acquire orderings (and on x86 through its store buffer) both loads
//! can read the old values, and then neither side acts: the answer waits for the app-response
//! timeout. Here every step is a read-modify-write of one word, so all of them are ordered in
//! that word's single modification order and one side always sees the other. The tests below check
//! both protocols exhaustively, the old one under a store-buffer model, where it loses a post.

use core::sync::atomic::{AtomicU32, Ordering};

/// The driver has parked: nobody drives the connection.
const PARKED: u32 = 1;
/// An application's answer is in the mailbox.
pub const MAIL: u32 = 2;
/// The client shut its side or reset the connection (a disconnect event).
pub const PEER_LEFT: u32 = 4;

/// The connection's park word.
#[derive(Debug, Default)]
pub struct Wake(AtomicU32);

impl Wake {
    /// Not parked, nothing posted.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// The driver has nothing to do. Parks (true: stop driving; a poster or the timer takes
    /// over) unless something was posted since [`Wake::take`] (false: go on).
    pub fn park(&self) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur & (MAIL | PEER_LEFT) != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(
                cur,
                cur | PARKED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Posts `what` ([`MAIL`] or [`PEER_LEFT`]) after the thing itself is in place. True when
    /// the connection was parked: the caller un-parked it and is now its driver.
    pub fn post(&self, what: u32) -> bool {
        let prev = self.0.fetch_or(what, Ordering::AcqRel);
        prev & PARKED != 0 && self.claim()
    }

    /// Un-parks a parked connection without posting (the timer, a close): true when the caller
    /// did, and so drives it now.
    pub fn claim(&self) -> bool {
        self.0.fetch_and(!PARKED, Ordering::AcqRel) & PARKED != 0
    }

    /// The driver takes what was posted: the bits of [`MAIL`] and [`PEER_LEFT`] set since the
    /// last take, cleared. It then reads the mailbox (posted before its bit).
    pub fn take(&self) -> u32 {
        self.0.fetch_and(!(MAIL | PEER_LEFT), Ordering::AcqRel) & (MAIL | PEER_LEFT)
    }
}

/// A work item that runs one routine at a time and never after it is closed (issue #22,
/// defect 9): the driver's relisten and purge work items.
///
/// The first version read the work item and then claimed it, so that unload could free it in
/// between; and a request that came while the routine ran was dropped, so a listener that died
/// then was never reopened. Here the claim comes first, a request during a run makes the
/// routine run again, and closing waits for a run to end.
#[derive(Debug, Default)]
pub struct WorkGate(AtomicU32);

const IDLE: u32 = 0;
const QUEUED: u32 = 1;
/// Queued or running, and asked again meanwhile.
const AGAIN: u32 = 2;
const CLOSED: u32 = 3;

impl WorkGate {
    /// Idle: the first [`WorkGate::request`] queues the routine.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicU32::new(IDLE))
    }

    /// Asks for a run. True: the caller queues the work item now (it is claimed, and cannot
    /// be freed until the run calls [`WorkGate::done`]). False: a run is queued or running
    /// and will run once more, or the gate is closed.
    pub fn request(&self) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let next = match cur {
                IDLE => QUEUED,
                QUEUED => AGAIN,
                _ => return false,
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return cur == IDLE,
                Err(now) => cur = now,
            }
        }
    }

    /// The routine has done its work: true when it was asked again meanwhile and must run
    /// once more (in the same call: a work item is not requeued from its own routine); false
    /// when it is done.
    pub fn done(&self) -> bool {
        if self
            .0
            .compare_exchange(QUEUED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return false;
        }
        // AGAIN: run once more, as QUEUED.
        self.0
            .compare_exchange(AGAIN, QUEUED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Closes the gate if no run is queued or running: true when closed (the work item may be
    /// freed now; no request queues it again), false to wait and try again.
    pub fn close(&self) -> bool {
        match self
            .0
            .compare_exchange(IDLE, CLOSED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == CLOSED,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Exhaustive interleavings of one driver and one poster.
    //!
    //! The old protocol runs on a total-store-order machine (x86's): each thread's stores wait
    //! in its own FIFO buffer until a flush step writes the oldest to memory, loads read the
    //! thread's own newest buffered store or memory, and a read-modify-write flushes the
    //! thread's buffer first and acts on memory. The explorer tries every order of every step
    //! and flush. The new protocol's steps are read-modify-writes of one word, which no
    //! buffer reorders: interleaving them is all there is.

    use super::{MAIL, Wake};
    use alloc::vec;
    use alloc::vec::Vec;

    /// Memory locations of the old protocol.
    const PARKED_LOC: usize = 0;
    const MAIL_LOC: usize = 1;

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Store(usize, u8),
        /// Load into the thread's register.
        Load(usize),
        /// Swap in a value; the old one into the register.
        Swap(usize, u8),
        /// The driver: stop unless the register is 1 (keep driving).
        StopUnlessReg,
        /// The driver: swap `parked` back if the mail was seen; if the swap found it still
        /// parked, it goes on driving (sees the mail).
        Unpark,
    }

    #[derive(Clone, Debug)]
    struct Thread {
        prog: Vec<Op>,
        pc: usize,
        reg: u8,
        buf: Vec<(usize, u8)>,
        /// The driver saw the mail (it keeps driving and takes it).
        saw: bool,
        /// The poster won `parked` (it resumes the driver).
        resumed: bool,
    }

    #[derive(Clone, Debug)]
    struct Machine {
        /// Stores wait in store buffers (x86); false: straight to memory (sequential
        /// consistency).
        tso: bool,
        mem: [u8; 2],
        t: [Thread; 2],
    }

    impl Machine {
        fn load(&self, i: usize, loc: usize) -> u8 {
            self.t[i]
                .buf
                .iter()
                .rev()
                .find(|(l, _)| *l == loc)
                .map_or(self.mem[loc], |&(_, v)| v)
        }

        fn flush_all(&mut self, i: usize) {
            for (l, v) in core::mem::take(&mut self.t[i].buf) {
                self.mem[l] = v;
            }
        }

        /// Runs thread `i`'s next instruction.
        fn step(&mut self, i: usize) {
            let op = self.t[i].prog[self.t[i].pc];
            self.t[i].pc += 1;
            match op {
                Op::Store(l, v) if self.tso => self.t[i].buf.push((l, v)),
                Op::Store(l, v) => self.mem[l] = v,
                Op::Load(l) => self.t[i].reg = self.load(i, l),
                Op::Swap(l, v) => {
                    self.flush_all(i);
                    self.t[i].reg = self.mem[l];
                    self.mem[l] = v;
                    if i == 1 && self.t[i].reg == 1 {
                        self.t[i].resumed = true;
                    }
                }
                Op::StopUnlessReg => {
                    if self.t[i].reg != 1 {
                        self.t[i].pc = self.t[i].prog.len();
                    }
                }
                Op::Unpark => {
                    self.flush_all(i);
                    let was = self.mem[PARKED_LOC];
                    self.mem[PARKED_LOC] = 0;
                    self.t[i].saw = was == 1;
                }
            }
        }
    }

    /// Every end state of the old protocol: (driver saw the mail, poster resumed it).
    fn explore(m: &Machine, out: &mut Vec<(bool, bool)>) {
        let mut moved = false;
        for i in 0..2 {
            if m.t[i].pc < m.t[i].prog.len() {
                let mut n = m.clone();
                n.step(i);
                explore(&n, out);
                moved = true;
            }
            if !m.t[i].buf.is_empty() {
                let mut n = m.clone();
                let (l, v) = n.t[i].buf.remove(0);
                n.mem[l] = v;
                explore(&n, out);
                moved = true;
            }
        }
        if !moved {
            out.push((m.t[0].saw, m.t[1].resumed));
        }
    }

    fn thread(prog: Vec<Op>) -> Thread {
        Thread {
            prog,
            pc: 0,
            reg: 0,
            buf: Vec::new(),
            saw: false,
            resumed: false,
        }
    }

    #[test]
    fn the_old_protocol_loses_a_post_through_the_store_buffer() {
        // The driver: parked = true; if mail is full and swap(parked, false) was true, go on.
        let driver = thread(vec![
            Op::Store(PARKED_LOC, 1),
            Op::Load(MAIL_LOC),
            Op::StopUnlessReg,
            Op::Unpark,
        ]);
        // The poster: mail = full; if swap(parked, false) was true, resume the driver.
        let poster = thread(vec![Op::Store(MAIL_LOC, 1), Op::Swap(PARKED_LOC, 0)]);
        let mut m = Machine {
            tso: true,
            mem: [0, 0],
            t: [driver, poster],
        };
        let mut ends = Vec::new();
        explore(&m, &mut ends);
        assert!(ends.len() > 10, "explored {} schedules", ends.len());
        assert!(
            ends.contains(&(false, false)),
            "some schedule leaves the mail with nobody driving"
        );
        // Without the buffers no schedule does: the flaw is the reordering.
        m.tso = false;
        ends.clear();
        explore(&m, &mut ends);
        assert!(!ends.is_empty() && !ends.contains(&(false, false)));
    }

    /// The new protocol's steps, each one atomic operation on the word.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// The driver: take what was posted.
        Take,
        /// The driver: park, or go on if something was posted meanwhile.
        Park,
        /// The poster: post the mail (after putting it in the mailbox).
        Post,
    }

    /// Runs one schedule of driver steps and poster steps in the given order: whether the mail
    /// was taken by the driver or the poster resumed a parked driver.
    fn run(schedule: &[Step]) -> bool {
        let w = Wake::new();
        let (mut parked, mut resumed, mut seen) = (false, false, false);
        for s in schedule {
            match s {
                Step::Take => seen |= w.take() & MAIL != 0,
                Step::Park => {
                    if w.park() {
                        parked = true;
                    } else {
                        // Something was posted: the driver goes on and takes it.
                        seen |= w.take() & MAIL != 0;
                    }
                }
                Step::Post => resumed = w.post(MAIL),
            }
        }
        // Resumed means the poster drives now, and will take the mail itself.
        seen || (parked && resumed)
    }

    #[test]
    fn the_new_protocol_never_loses_a_post() {
        // Every place the post can take among the driver's two steps, the driver's own order
        // fixed: take, then park.
        let mut schedules = 0;
        for at in 0..=2 {
            let mut s = vec![Step::Take, Step::Park];
            s.insert(at, Step::Post);
            assert!(run(&s), "lost in {s:?}");
            schedules += 1;
        }
        assert_eq!(schedules, 3);
        // And a second round: the resumed driver takes, parks again; a second post lands
        // anywhere in that.
        let w = Wake::new();
        assert!(
            !w.park() || w.post(MAIL),
            "parked, then the post resumes it"
        );
        assert_eq!(w.take(), MAIL);
        assert!(w.park());
        assert!(w.claim(), "the timer un-parks it");
        assert!(!w.claim(), "once");
        assert!(!w.post(MAIL), "not parked: the post is left for the driver");
        assert!(!w.park(), "which sees it before it parks");
    }

    #[test]
    fn a_work_gate_runs_once_at_a_time_again_when_asked_and_never_after_close() {
        use super::WorkGate;
        let g = WorkGate::new();
        assert!(g.request(), "idle: queue it");
        assert!(!g.request(), "queued: not twice, but once more");
        assert!(!g.close(), "a run is pending: unload waits");
        assert!(g.done(), "asked meanwhile: run again");
        assert!(!g.done(), "then done");
        assert!(g.close(), "idle: closed");
        assert!(!g.request(), "closed: never queued again");
        assert!(g.close());
        // Every order of one request and one close from idle: either the request queues and
        // the close waits, or the close wins and the request does nothing.
        let g = WorkGate::new();
        assert!(g.close());
        assert!(!g.request());
    }
}
