#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// How the control plane asks one event loop a question only the loop's own thread can answer
/// (its connections for `/flows`, copies of its listeners for a takeover).
///
/// The loop checks `pending` once per turn (one relaxed load: nothing on the data path when
/// nobody asks); a caller queues its question under the lock (`pending` is only written
/// there) and wakes the loop, which answers every queued question in its next turn and stores
/// each answer for its caller to collect. The lock is only ever taken to queue, take and
/// collect, never while a loop moves bytes. An answer nobody collects (its caller gave up, or
/// the loop stopped) goes to `discard`, so one that owns resources (descriptors) releases them.
final class LoopChannel<Question: Sendable, Answer: Sendable>: Sendable {
    private struct State {
        var nextTicket: UInt64 = 0
        var questions: [(ticket: UInt64, question: Question)] = []
        var answers: [UInt64: Answer] = [:]
        /// Tickets whose caller gave up before the answer came: their answers are discarded.
        var abandoned: Set<UInt64> = []
        var closed = false
    }

    private let state = Mutex(State())
    private let discard: @Sendable (Answer) -> Void
    /// Questions queued and not yet taken by the loop.
    let pending = Atomic<Int>(0)

    init(discard: @escaping @Sendable (Answer) -> Void = { _ in }) {
        self.discard = discard
    }

    /// Queues `question`, wakes the loop with `wake`, and waits up to `timeout` for the answer;
    /// nil when the loop does not answer in time (it has stopped), or the task is cancelled.
    func ask(_ question: Question, timeout: Duration, wake: () -> Void) async -> Answer? {
        guard let ticket = enqueue(question) else { return nil }
        wake()
        let deadline = ContinuousClock.now + timeout
        while true {
            let (answer, closed) = collect(ticket)
            if let answer { return answer }
            if closed || Task.isCancelled || ContinuousClock.now >= deadline { break }
            try? await Task.sleep(for: .milliseconds(1))
        }
        withdraw(ticket)
        return nil
    }

    /// `ask` for a caller on a thread of its own (not a task), sleeping between looks.
    func askBlocking(_ question: Question, timeout: Duration, wake: () -> Void) -> Answer? {
        guard let ticket = enqueue(question) else { return nil }
        wake()
        let deadline = ContinuousClock.now + timeout
        while true {
            let (answer, closed) = collect(ticket)
            if let answer { return answer }
            if closed || ContinuousClock.now >= deadline { break }
            usleep(1000)
        }
        withdraw(ticket)
        return nil
    }

    /// The loop's side: answers every queued question with `answer`.
    func serve(_ answer: (Question) -> Answer) {
        let taken = state.withLock { s in
            let q = s.questions
            s.questions = []
            pending.store(0, ordering: .relaxed)
            return q
        }
        for item in taken {
            let result = answer(item.question)
            let kept = state.withLock { s in
                guard s.abandoned.remove(item.ticket) == nil, !s.closed else { return false }
                s.answers[item.ticket] = result
                return true
            }
            if !kept { discard(result) }
        }
    }

    /// The loop has stopped: waiting callers, and later ones, get nil at once.
    func close() {
        let dropped = state.withLock { s in
            s.closed = true
            s.questions = []
            let answers = Array(s.answers.values)
            s.answers = [:]
            s.abandoned = []
            pending.store(0, ordering: .relaxed)
            return answers
        }
        for answer in dropped { discard(answer) }
    }

    private func enqueue(_ question: Question) -> UInt64? {
        state.withLock { s in
            guard !s.closed else { return nil }
            s.nextTicket &+= 1
            s.questions.append((s.nextTicket, question))
            pending.store(s.questions.count, ordering: .relaxed)
            return s.nextTicket
        }
    }

    private func collect(_ ticket: UInt64) -> (Answer?, closed: Bool) {
        state.withLock { s in (s.answers.removeValue(forKey: ticket), s.closed) }
    }

    /// The caller gives up: its question leaves the queue, or its answer is discarded when it comes.
    private func withdraw(_ ticket: UInt64) {
        let late: Answer? = state.withLock { s in
            if let queued = s.questions.firstIndex(where: { $0.ticket == ticket }) {
                s.questions.remove(at: queued)
                pending.store(s.questions.count, ordering: .relaxed)
                return nil
            }
            if let answer = s.answers.removeValue(forKey: ticket) { return answer }
            // The loop is answering it (or has stopped): its answer is discarded when it comes.
            if !s.closed { s.abandoned.insert(ticket) }
            return nil
        }
        if let late { discard(late) }
    }
}
