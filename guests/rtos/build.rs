include!("../common/guest-link.rs");
