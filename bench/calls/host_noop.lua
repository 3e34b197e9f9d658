-- Bench item 6, for scale: the same host and state lifecycle without ecw.
return true
