//! The curated prompt-injection pattern set (matched case-insensitively),
//! by category. Documented in docs/pii.md; each pattern names a phrase
//! that has no business in an ordinary prompt.

pub const CATEGORIES: &[&str] = &[
    "instruction_override",
    "role_hijack",
    "system_prompt_extraction",
    "delimiter_injection",
];

/// (category index, Hyperscan expression).
pub static INJECTION: &[(u8, &str)] = &[
    // instruction override
    (
        0,
        r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+)*(?:previous|prior|above|earlier|preceding|system|original)\s+(?:instructions?|prompts?|directions?|rules|guidelines|messages?|context)",
    ),
    (
        0,
        r"\bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|before)",
    ),
    (
        0,
        r"\bnew\s+instructions?\s*:\s*(?:ignore|disregard|you\s+(?:must|will))",
    ),
    // role hijack
    (
        1,
        r"\byou\s+are\s+(?:now\s+)?(?:DAN|in\s+developer\s+mode|an?\s+(?:unrestricted|unfiltered|jailbroken|uncensored)\b)",
    ),
    (
        1,
        r"\b(?:act|behave|respond)\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|jailbroken|uncensored)\b",
    ),
    (
        1,
        r"\bpretend\s+(?:that\s+)?you\s+(?:are|have)\s+no\s+(?:restrictions|rules|guidelines|filters|limits)",
    ),
    (
        1,
        r"\b(?:DAN|developer)\s+mode\s+(?:enabled|activated|on)\b",
    ),
    // system prompt extraction
    (
        2,
        r"\b(?:reveal|print|show|repeat|output|display|leak|dump|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|exact\s+)?(?:system|hidden|initial|original|secret)\s+(?:prompt|instructions?|message)",
    ),
    (
        2,
        r"\bwhat\s+(?:is|are|was|were)\s+your\s+(?:system\s+prompt|initial\s+instructions|hidden\s+instructions|original\s+instructions)",
    ),
    (2, r"\brepeat\s+(?:the\s+|all\s+)?(?:words|text)\s+above\b"),
    // delimiter injection: chat-template control tokens inside user text
    (
        3,
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id|end_header_id|eot_id)\|>",
    ),
    (3, r"\[/?INST\]|<</?SYS>>"),
];
