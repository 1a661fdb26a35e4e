import HTTPTypes
import Hummingbird
import NIOCore

/// Answers what the stats server's routes do not, with a body saying what there is
/// (Hummingbird's own answers are empty): a known page asked with a method it does not take
/// gets 405 and `Allow`, an unknown page 404.
struct StatsFallbackMiddleware: RouterMiddleware {
    typealias Context = StatsRequestContext

    /// Each page and the methods it takes, as `Allow` lists them.
    let pages: [String: String]

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            if path.hasPrefix("/servers/") && request.method != .post {
                return Self.answer(.methodNotAllowed, "\(request.method) is not served on \(path): commands are POST /servers/POOL/NAME/drain or /ready",
                                   allow: "POST")
            }
            if let allowed = pages[path] {
                return Self.answer(.methodNotAllowed, "\(request.method) is not served on \(path): use \(allowed)",
                                   allow: allowed)
            }
            let known = pages.keys.sorted().joined(separator: ", ")
            return Self.answer(.notFound, "no page '\(path)': convey serves \(known), and takes POST /servers/POOL/NAME/drain or /ready")
        }
    }

    private static func answer(_ status: HTTPResponse.Status, _ message: String, allow: String? = nil) -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if let allow { headers[.allow] = allow }
        let body = JSONValue.object([("error", .string(message))]).serialized(pretty: true) + "\n"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
