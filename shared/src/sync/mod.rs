//! The pure sync core: three-way change detection, merge, conflict policy, matching, planning (DESIGN §4). No I/O.
