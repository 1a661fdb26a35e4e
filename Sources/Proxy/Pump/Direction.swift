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
/// direction is then finished; the other direction goes on until it finishes too.
struct Direction {
    /// The pipe of this direction, or `.none` before the first byte (pipes are taken lazily).
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

    /// The result of one `pump`.
    struct Outcome {
        /// Bytes written to the destination.
        var moved = 0
        /// The error that ends the connection (reset, broken pipe, ...), if any.
        var error: Errno?
    }

    var isCopying: Bool { copyBuffer != nil }

    /// Moves everything that can move now from `source` to `destination` (see the type's notes).
    @inline(__always)
    mutating func pump(from source: Int32, to destination: Int32) -> Outcome {
        var outcome = Outcome()
        if finished { return outcome }
        if copyBuffer == nil {
            spliceLoop(from: source, to: destination, &outcome)
        }
        if copyBuffer != nil && outcome.error == nil {
            copyLoop(from: source, to: destination, &outcome)
        }
        if outcome.error == nil && sourceEnded && buffered == 0 && !finished {
            SocketCalls.shutdownWrite(destination)
            finished = true
        }
        return outcome
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
    /// holds (the pipe stays attached so `release` hands it back or closes it).
    mutating func switchToCopy() {
        copyCapacity = max(Direction.copyBufferSize, pipe.capacity)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: copyCapacity, alignment: 64)
        copyBuffer = buffer
        copyHead = 0
        var held = 0
        while held < buffered {
            guard let n = try? SocketCalls.read(pipe.readEnd, buffer + held, buffered - held), n > 0 else { break }
            held += n
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
