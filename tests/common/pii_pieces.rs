//! Pieces the PII property tests build texts from: entities of every
//! kind, near misses and lone separators. Shared by tests/pii_scan.rs
//! (split streams mask like whole texts) and tests/pii_layout.rs (the
//! split databases match like one), included there by `#[path]`.

pub const PIECES: &[&str] = &[
    "hello ", "world. ", "mail jan.de.vries@example.nl ", "or a@b.co", "m ", "call +31 20 123 4567",
    " or 06-12345678", " IBAN NL91 ABNA 0417 1643 00", " card 4111 1111 1111 1111",
    " bsn 111222333", " ssn 123-45-6789", " ip 192.168.1.10", " v1.2.3.4.5", " fe80::1 ",
    " Bearer abc123def456ghi789jkl012", " AKIAIOSFODNN7EXAMPLE", " sk-abcdefghijklmnopqrstuvwxyz0123",
    " order 1234567890123456", " 2024-01-15 ", "\n", "-----BEGIN PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy\n-----END PRIVATE KEY-----",
    " EMP-123456", "x", "0", " ", "@", ".", "-",
];
