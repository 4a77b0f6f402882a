//! A valid component of a world Berth does not know (`acme:widgets/gadget`).

wit_bindgen::generate!({ world: "gadget", path: "wit" });

struct Alien;

impl Guest for Alien {
    fn frobnicate() -> String {
        "frobnicated".into()
    }
}

export!(Alien);
