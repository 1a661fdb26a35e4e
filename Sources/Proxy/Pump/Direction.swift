#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// One direction of a proxied connection (client → server or server → client): the bytes in
/// flight between a source socket and a destination socket, and how far each end has closed.
///
/// ## How bytes move
/// `splice(2)` source → pipe, then pipe → destination: the payload stays in kernel pages, the
/// proxy only moves page references. Where the kernel refuses splice on a socket (`EINVAL`,
/// e.g. a socket type without splice support), the direction switches once, for the rest of its
/// life, to `read(2)`/`write(2)` through a buffer of its own (allocated at that moment, never
/// per read), after handing over what the pipe already held.
///
/// ## Small transfers first
/// A direction starts without a pipe: `read(2)` into the loop's scratch buffer and `write(2)`
/// straight on. For the few dozen bytes of a request or reply that is cheaper than two splices
/// (no pipe buffers, no page references, no pipe taken from the pool), which is most of the cost
/// of a short connection. The first read that fills the scratch buffer (a bulk transfer) or a
/// write the destination does not take whole (backpressure) attaches a pipe for the rest of
/// the direction's life; bytes not yet written are written into that pipe, so from then on the
/// pipe is again the only place bytes wait. The scratch buffer is shared by every connection of
/// the loop and never holds bytes between two calls.
///
/// ## Backpressure
/// The pipe (or buffer) is the only place bytes wait. While it is full the source is not read,
/// so TCP's own window pushes back on the sender; the next writability edge of the destination
/// drains it and reading resumes. `pump` keeps going until neither end can make progress, which
/// is what edge-triggered epoll requires: every stop is on `EAGAIN` at one end, and that end's
/// next edge calls `pump` again.
///
/// ## Half-close
/// End of stream from the source (`splice`/`read` returning 0) is passed on as
/// `shutdown(SHUT_WR)` on the destination once every buffered byte has been written, and the
/// direction is then finished; the other direction goes on until it finishes too. When the
/// other direction has already finished, the connection is closed right after this pump and
/// `close(2)` sends the FIN itself (both receive queues are empty: each source was read to its
/// end), so the `shutdown` is left out.
struct Direction {
    /// The pipe of this direction, or `.none` while bytes still go through the loop's scratch
    /// buffer (see "Small transfers first").
    var pipe: PipePair = .none
    /// Bytes read from the source and not yet written to the destination.
    var buffered = 0
    /// The source has sent end of stream.
    var sourceEnded = false
    /// `shutdown(SHUT_WR)` has been sent to the destination: this direction is finished.
    var finished = false
    /// Copy-mode buffer (nil while splicing).
    var copyBuffer: UnsafeMutableRawPointer?
    var copyCapacity = 0
    /// Start of unwritten bytes in `copyBuffer`.
    var copyHead = 0

    /// The size of the copy-mode buffer (at least the pipe's capacity so a pipe's content fits).
    static let copyBufferSize = 256 * 1024
    /// The copy-mode buffer of a direction that never had a pipe (no descriptor for one while
    /// the process is at its open-files limit, or forced): smaller, since at that limit many
    /// connections may fall back at once and each keeps its buffer for life.
    static let pipelessCopyBufferSize = 64 * 1024

    /// The result of one `pump`.
    struct Outcome {
        /// Bytes written to the destination.
        var moved = 0
        /// The error that ends the connection (reset, broken pipe, ...), if any.
        var error: Errno?
        /// `error` came from reading the source (else from writing the destination).
        var errorAtSource = false
        /// This pump took a pipe from the pool (the loop counts pipes in use).
        var tookPipe = false
        /// This pump could not get a pipe and switched to the read/write fallback.
        var fellBackToCopy = false
    }

    var isCopying: Bool { copyBuffer != nil }

    /// Still moving bytes through the loop's scratch buffer: neither a pipe nor a copy buffer yet.
    var isStarting: Bool { !pipe.isOpen && copyBuffer == nil }

    /// Moves everything that can move now from `source` to `destination` (see the type's notes).
    /// `scratch` is the loop's shared buffer for the first bytes; `pipes` gives the pipe when
    /// the direction outgrows it. `closingAfter`: the other direction has finished, so this
    /// one finishing closes the connection (see "Half-close").
    @inline(__always)
    mutating func pump(from source: Int32, to destination: Int32, scratch: UnsafeMutableRawBufferPointer,
                       pipes: inout PipePool, closingAfter: Bool) -> Outcome {
        var outcome = Outcome()
        if finished { return outcome }
        if isStarting {
            scratchLoop(from: source, to: destination, scratch: scratch, pipes: &pipes, &outcome)
        }
        if pipe.isOpen && copyBuffer == nil && outcome.error == nil {
            spliceLoop(from: source, to: destination, &outcome)
        }
        if copyBuffer != nil && outcome.error == nil {
            copyLoop(from: source, to: destination, &outcome)
        }
        if outcome.error == nil && sourceEnded && buffered == 0 && !finished {
            if !closingAfter { SocketCalls.shutdownWrite(destination) }
            finished = true
        }
        return outcome
    }

    /// Read into `scratch`, write on at once, until the source has nothing more, ends, or the
    /// direction needs a pipe: a read filled `scratch` (bulk) or the destination took less than
    /// was read (what it did not take goes into the pipe).
    @inline(__always)
    private mutating func scratchLoop(from source: Int32, to destination: Int32, scratch: UnsafeMutableRawBufferPointer,
                                      pipes: inout PipePool, _ outcome: inout Outcome) {
        let base = scratch.baseAddress!
        while !sourceEnded {
            let n: Int
            do {
                guard let got = try SocketCalls.read(source, base, scratch.count) else { return }
                n = got
            } catch {
                outcome.error = error
                outcome.errorAtSource = true
                return
            }
            if n == 0 {
                sourceEnded = true
                return
            }
            var written = 0
            do {
                while written < n, let w = try SocketCalls.write(destination, base + written, n - written) {
                    written += w
                }
            } catch {
                outcome.error = error
                return
            }
            outcome.moved += written
            if written < n || n == scratch.count {
                attachPipe(holding: UnsafeRawPointer(base + written), count: n - written, pipes: &pipes, &outcome)
                return
            }
        }
    }

    /// Leaves the scratch buffer for good: takes a pipe and writes into it the `count` bytes
    /// at `rest` that the destination has not taken yet. Without a pipe (descriptor limit), or
    /// when the kernel gave one too small to hold `rest` whole, switches to the read/write
    /// fallback with those bytes in its buffer instead.
    private mutating func attachPipe(holding rest: UnsafeRawPointer, count: Int, pipes: inout PipePool,
                                     _ outcome: inout Outcome) {
        if let taken = try? pipes.take() {
            if taken.capacity >= count {
                var put = 0
                while put < count, let w = try? SocketCalls.write(taken.writeEnd, rest + put, count - put), w > 0 {
                    put += w
                }
                if put == count {
                    pipe = taken
                    buffered = count
                    outcome.tookPipe = true
                    return
                }
                // Not reached with an empty pipe of enough capacity; keep the bytes in order anyway.
                pipe = taken
                buffered = put
                outcome.tookPipe = true
                switchToCopy(carrying: rest + put, count: count - put)
                outcome.fellBackToCopy = true
                return
            }
            pipes.give(taken)
        }
        switchToCopy(carrying: rest, count: count)
        outcome.fellBackToCopy = true
    }

    @inline(__always)
    private mutating func spliceLoop(from source: Int32, to destination: Int32, _ outcome: inout Outcome) {
        while true {
            var progress = false
            if !sourceEnded && buffered < pipe.capacity {
                do {
                    if let n = try Splice.move(from: source, to: pipe.writeEnd, count: pipe.capacity - buffered) {
                        if n == 0 { sourceEnded = true } else { buffered += n }
                        progress = true
                    }
                } catch {
                    if error == .invalidArgument { switchToCopy(); return }
                    outcome.error = error
                    outcome.errorAtSource = true
                    return
                }
            }
            if buffered > 0 {
                do {
                    if let n = try Splice.move(from: pipe.readEnd, to: destination, count: buffered) {
                        buffered -= n
                        outcome.moved += n
                        progress = progress || n > 0
                    }
                } catch {
                    if error == .invalidArgument { switchToCopy(); return }
                    outcome.error = error
                    return
                }
            }
            if !progress { return }
        }
    }

    @inline(__always)
    private mutating func copyLoop(from source: Int32, to destination: Int32, _ outcome: inout Outcome) {
        guard let buffer = copyBuffer else { return }
        while true {
            var progress = false
            if !sourceEnded && copyHead + buffered < copyCapacity {
                let tail = copyHead + buffered
                do {
                    if let n = try SocketCalls.read(source, buffer + tail, copyCapacity - tail) {
                        if n == 0 { sourceEnded = true } else { buffered += n }
                        progress = true
                    }
                } catch {
                    outcome.error = error
                    outcome.errorAtSource = true
                    return
                }
            }
            if buffered > 0 {
                do {
                    if let n = try SocketCalls.write(destination, buffer + copyHead, buffered) {
                        buffered -= n
                        copyHead = buffered == 0 ? 0 : copyHead + n
                        outcome.moved += n
                        progress = progress || n > 0
                    }
                } catch {
                    outcome.error = error
                    return
                }
            }
            if !progress { return }
        }
    }

    /// Leaves splicing for good: allocates the copy buffer and moves into it whatever the pipe
    /// holds, then the `count` bytes at `rest` (bytes read but not yet in the pipe). The pipe
    /// stays attached so `release` hands it back or closes it.
    mutating func switchToCopy(carrying rest: UnsafeRawPointer? = nil, count: Int = 0) {
        copyCapacity = pipe.isOpen ? max(Direction.copyBufferSize, pipe.capacity + count)
                                   : max(Direction.pipelessCopyBufferSize, count)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: copyCapacity, alignment: 64)
        copyBuffer = buffer
        copyHead = 0
        var held = 0
        if pipe.isOpen {
            while held < buffered {
                guard let n = try? SocketCalls.read(pipe.readEnd, buffer + held, buffered - held), n > 0 else { break }
                held += n
            }
        }
        if let rest, count > 0 {
            (buffer + held).copyMemory(from: rest, byteCount: count)
            held += count
        }
        buffered = held
    }

    /// Gives the pipe back to `pool` when empty (else closes it) and frees the copy buffer.
    mutating func release(to pool: inout PipePool) -> Bool {
        var pooled = false
        if pipe.isOpen {
            if buffered == 0 || copyBuffer != nil {
                pool.give(pipe)
                pooled = true
            } else {
                pipe.close()
            }
            pipe = .none
        }
        copyBuffer?.deallocate()
        copyBuffer = nil
        return pooled
    }
}
