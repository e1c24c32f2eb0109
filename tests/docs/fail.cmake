# A test that fails with a message (cmake -DMSG=... -P fail.cmake).
message(FATAL_ERROR "${MSG}")
