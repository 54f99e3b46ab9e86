//! The curated prompt-injection pattern set (matched case-insensitively),
//! by category, and the anchor words that gate it. Documented in
//! docs/pii.md; each pattern names a phrase that has no business in an
//! ordinary prompt.
//!
//! Anchors: together the patterns scan prose at ~1.2 GiB/s (about the sum
//! of their costs alone, 5-41 GiB/s each), while a search for their
//! sixteen anchor words takes ~150 us per MiB (docs/pii.md, "Database
//! layout"). Every match
//! of a pattern contains one of its anchors (case-insensitively), so the
//! scanner runs the word patterns only on texts where an anchor occurs
//! (`scanner.rs`); a text without one cannot match. An anchor is a word the
//! pattern requires: taken from an alternation that every match goes
//! through, never from an optional part. The chat-template delimiters have
//! no anchors: their own literals are rare and cheap to search for (they
//! would halve the speed of the anchor search), so they are always
//! scanned.

pub const CATEGORIES: &[&str] = &[
    "instruction_override",
    "role_hijack",
    "system_prompt_extraction",
    "delimiter_injection",
];

/// One prompt-injection pattern.
pub struct InjectionPattern {
    /// Index into `CATEGORIES`.
    pub category: u8,
    /// Hyperscan expression, compiled case-insensitive.
    pub expression: &'static str,
    /// Every match contains one of these (case-insensitively); empty:
    /// always scanned.
    pub anchors: &'static [&'static str],
}

const fn inj(
    category: u8,
    expression: &'static str,
    anchors: &'static [&'static str],
) -> InjectionPattern {
    InjectionPattern {
        category,
        expression,
        anchors,
    }
}

/// The words that open an instruction override.
const OVERRIDE_VERBS: &[&str] = &["ignore", "disregard", "forget", "override", "bypass"];
/// The adjectives of an unrestricted persona.
const PERSONA: &[&str] = &["unrestricted", "unfiltered", "jailbroken", "uncensored"];

pub static INJECTION: &[InjectionPattern] = &[
    // instruction override
    inj(
        0,
        r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+)*(?:previous|prior|above|earlier|preceding|system|original)\s+(?:instructions?|prompts?|directions?|rules|guidelines|messages?|context)",
        OVERRIDE_VERBS,
    ),
    inj(
        0,
        r"\bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|before)",
        &["forget"],
    ),
    inj(
        0,
        r"\bnew\s+instructions?\s*:\s*(?:ignore|disregard|you\s+(?:must|will))",
        &["instruction"],
    ),
    // role hijack
    inj(
        1,
        r"\byou\s+are\s+(?:now\s+)?(?:DAN|in\s+developer\s+mode|an?\s+(?:unrestricted|unfiltered|jailbroken|uncensored)\b)",
        &[
            "dan",
            "developer",
            "unrestricted",
            "unfiltered",
            "jailbroken",
            "uncensored",
        ],
    ),
    inj(
        1,
        r"\b(?:act|behave|respond)\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|jailbroken|uncensored)\b",
        PERSONA,
    ),
    inj(
        1,
        r"\bpretend\s+(?:that\s+)?you\s+(?:are|have)\s+no\s+(?:restrictions|rules|guidelines|filters|limits)",
        &["pretend"],
    ),
    inj(
        1,
        r"\b(?:DAN|developer)\s+mode\s+(?:enabled|activated|on)\b",
        &["dan", "developer"],
    ),
    // system prompt extraction
    inj(
        2,
        r"\b(?:reveal|print|show|repeat|output|display|leak|dump|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|exact\s+)?(?:system|hidden|initial|original|secret)\s+(?:prompt|instructions?|message)",
        &["prompt", "instruction", "message"],
    ),
    inj(
        2,
        r"\bwhat\s+(?:is|are|was|were)\s+your\s+(?:system\s+prompt|initial\s+instructions|hidden\s+instructions|original\s+instructions)",
        &["prompt", "instruction"],
    ),
    inj(
        2,
        r"\brepeat\s+(?:the\s+|all\s+)?(?:words|text)\s+above\b",
        &["repeat"],
    ),
    // delimiter injection: chat-template control tokens inside user text
    inj(
        3,
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id|end_header_id|eot_id)\|>",
        &[],
    ),
    inj(3, r"\[/?INST\]|<</?SYS>>", &[]),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each anchor is spelled in its pattern (so it is no typo), in lower
    /// case (the gate is case-insensitive anyway).
    #[test]
    fn anchors_appear_in_their_patterns() {
        for p in INJECTION {
            let expr = p.expression.to_ascii_lowercase().replace('\\', "");
            for a in p.anchors {
                assert_eq!(*a, a.to_ascii_lowercase());
                assert!(expr.contains(a), "{a:?} not in {}", p.expression);
            }
        }
    }
}
