import Testing

/// Every proxy-mode story, run one at a time: several of them count this process's open
/// descriptors or connections, which tests running beside them would disturb.
@Suite(.serialized) struct ProxyTests {}
