//! Where log lines go: a thread that writes them to stderr in batches, so a decision never
//! waits on stderr and a burst of decisions costs one write and one wake-up, not one each.
//!
//! The first line into an empty buffer wakes the writer thread. It then gathers for
//! `LINGER` and writes everything that arrived in one call. Under load that is one wake-up
//! per `LINGER` instead of one per line: a thread woken per line (tracing-appender's
//! worker) cost about 3 µs of CPU per denied review (BENCHMARKS.md).
//!
//! Lossless: when stderr stalls and `CAPACITY` bytes are waiting, loggers wait for room, so
//! under a log flood requests slow down rather than decisions go unrecorded. Dropping the
//! [`Flush`] guard writes whatever is waiting before it returns.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers after the first line of a batch: the most a line waits for
/// stderr while the process runs.
const LINGER: Duration = Duration::from_millis(2);

/// Bytes waiting before loggers block: lines held while stderr stalls.
const CAPACITY: usize = 4 << 20;

/// What the buffer shrinks back to after a stall grew it.
const KEEP: usize = 64 << 10;

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a first line, and lingers here until shutdown.
    lines: Condvar,
    /// Loggers wait here while the buffer is full.
    room: Condvar,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A logger that panicked mid-append leaves whole lines behind it: appends are single
        // `extend_from_slice` calls. The buffer stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` for tracing-subscriber; each line is one `write` of a whole event.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// Writes what is waiting and stops the writer thread when dropped. Hold it until the
/// process is done logging: lines logged after it is dropped are not written.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer thread for `out`, usually stderr.
pub fn spawn<W: Write + Send + 'static>(out: W) -> (Lines, Flush) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(KEEP),
            closed: false,
        }),
        lines: Condvar::new(),
        room: Condvar::new(),
    });
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_batches(&writer, out))
        .expect("spawning the log writer thread");
    (
        Lines {
            shared: Arc::clone(&shared),
        },
        Flush {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(KEEP);
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closed {
            state = shared
                .lines
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.buffer.is_empty() {
            return; // closed, and everything written
        }
        if !state.closed {
            // Lines keep arriving meanwhile without waking anyone; shutdown ends the wait.
            state = shared
                .lines
                .wait_timeout_while(state, LINGER, |s| !s.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut state.buffer, &mut batch);
        drop(state);
        shared.room.notify_all();
        // Nowhere is left to report a failing stderr; the lines are dropped so that loggers
        // never wait on it for good.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        batch.shrink_to(KEEP);
    }
}

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buffer.len() >= CAPACITY && !state.closed {
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let first = state.buffer.is_empty();
        state.buffer.extend_from_slice(line);
        drop(state);
        if first {
            self.shared.lines.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_all();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A sink that hands each batch to the test as it is written.
    struct Batches(mpsc::Sender<Vec<u8>>);

    impl Write for Batches {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(lines: &Lines, line: &str) {
        (&mut lines.make_writer())
            .write_all(line.as_bytes())
            .unwrap();
    }

    /// A lone line reaches the output while the process runs, without a second line or a
    /// shutdown to push it out.
    #[test]
    fn a_single_line_is_written_without_waiting_for_more() {
        let (tx, rx) = mpsc::channel();
        let (lines, _flush) = spawn(Batches(tx));
        log(&lines, "one\n");
        // The bound only turns a hang into a failure; the line arrives after LINGER.
        let batch = rx.recv_timeout(Duration::from_secs(30)).expect("written");
        assert_eq!(batch, b"one\n");
    }

    /// Every line of every thread is written whole, each thread's lines in their order, and
    /// the guard writes what is waiting before it returns.
    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_order() {
        let (tx, rx) = mpsc::channel();
        let (lines, flush) = spawn(Batches(tx));
        std::thread::scope(|s| {
            for t in 0..4 {
                let lines = &lines;
                s.spawn(move || {
                    for i in 0..2000 {
                        log(lines, &format!("thread {t} line {i}\n"));
                    }
                });
            }
        });
        drop(flush);
        let written: Vec<u8> = rx.try_iter().flatten().collect();
        let text = String::from_utf8(written).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t}: lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4]);
    }

    /// While the output stalls, loggers past `CAPACITY` wait for room; once it moves again,
    /// every line is there.
    #[test]
    fn a_stalled_output_holds_loggers_back_and_loses_nothing() {
        struct Gated {
            gate: mpsc::Receiver<()>,
            out: mpsc::Sender<Vec<u8>>,
        }
        impl Write for Gated {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.gate.recv().expect("the test opens the gate");
                let _ = self.out.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (open, gate) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let (lines, flush) = spawn(Gated { gate, out: tx });
        let line = format!("{}\n", "x".repeat(1023));
        let count = 3 * CAPACITY / line.len();
        let logger = {
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..count {
                    log(&lines, &line);
                }
            })
        };
        // One batch per opening. Until every byte is in, some are waiting in the buffer or
        // in the writer's hands, so each opening yields a batch.
        let (mut received, mut batches) = (0, 0);
        while received < count * line.len() {
            open.send(()).unwrap();
            let batch = rx.recv_timeout(Duration::from_secs(30)).expect("a batch");
            // Without the bound the logger would fill the buffer while the output is shut,
            // and one batch would carry nearly everything.
            assert!(
                batch.len() < CAPACITY + line.len(),
                "a batch of {} bytes: loggers were not held back",
                batch.len()
            );
            received += batch.len();
            batches += 1;
        }
        logger.join().unwrap();
        drop(flush);
        assert_eq!(received, count * line.len(), "every line written");
        assert!(batches >= 3, "{batches} batches");
    }
}
