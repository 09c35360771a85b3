"""lionk's own test suite (a package, so that its module names cannot collide with conformance/)."""
