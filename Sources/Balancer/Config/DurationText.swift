extension Duration {
    /// The duration as a number of seconds, as the configuration file writes it: `2`, `1.5`.
    public var configValue: String {
        let (s, atto) = components
        if atto == 0 { return "\(s)" }
        var text = String(Double(s) + Double(atto) / 1e18)
        if text.hasSuffix(".0") { text.removeLast(2) }
        return text
    }

    /// The same with its unit, for messages: `2 s`, `1.5 s` (`Duration`'s own description
    /// says `2.0 seconds`).
    public var configText: String { configValue + " s" }
}
