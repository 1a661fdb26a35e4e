import Glibc
import Testing
@testable import Proxy

@Suite("Pipe pool: keeps only empty full-size pipes, within the user's pipe budget")
struct PipePoolTests {
    @Test("a pipe smaller than asked is closed, not pooled; a full-size one is pooled and handed out again")
    func undersizedPipesAreNotKept() throws {
        var pool = PipePool(limit: 4, pipeSize: 256 * 1024)
        let small = try Splice.makePipe(size: 4096)
        #expect(small.capacity < 256 * 1024)
        pool.give(small)
        #expect(pool.count == 0)
        #expect(fcntl(small.readEnd, F_GETFD) == -1 && errno == EBADF, "its descriptors are closed")
        let full = try pool.take()
        #expect(full.capacity >= 256 * 1024 || geteuid() != 0, "root gets the size it asks for")
        pool.give(full)
        #expect(pool.count == (full.capacity >= 256 * 1024 ? 1 : 0))
    }

    @Test("an unprivileged loop pools at most an eighth of pipe-user-pages-soft; root is not limited")
    func poolFitsTheUserBudget() throws {
        let limit = PipePool.limitForUserPipePages(pipeSize: 256 * 1024)
        if geteuid() == 0 {
            #expect(limit == Int.max)
        } else {
            #expect(limit >= 4 && limit <= 1024)
        }
        #expect(PipePool.limitForUserPipePages(pipeSize: 0) == Int.max)
        // The default budget, 16384 pages of 4 KiB (64 MiB): 32 pipes of 256 KiB per loop.
        #expect(PipePool.limit(softPages: 16384, pageSize: 4096, pipeSize: 256 * 1024) == 32)
        #expect(PipePool.limit(softPages: 100, pageSize: 4096, pipeSize: 256 * 1024) == 0)
        #expect(PipePool(limit: 1024, pipeSize: 256 * 1024, sharedBy: 8).limit >= 4, "a few each, whatever the budget")
    }
}
