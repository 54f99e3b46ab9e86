//! TEMPORARY stub; replaced by the verifier branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    Number,
    Date,
    Negation,
    Direction,
    Name,
    Code,
    Antonym,
    ArgumentOrder,
}
impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::Number,
        Rejection::Date,
        Rejection::Negation,
        Rejection::Direction,
        Rejection::Name,
        Rejection::Code,
        Rejection::Antonym,
        Rejection::ArgumentOrder,
    ];
    pub fn as_str(self) -> &'static str {
        "x"
    }
}
#[derive(Default)]
pub struct Verifier;
impl Verifier {
    pub fn new() -> Self {
        Verifier
    }
    pub fn check(&self, a: &str, b: &str) -> Result<(), Rejection> {
        if a == b {
            Ok(())
        } else {
            Err(Rejection::Name)
        }
    }
}
