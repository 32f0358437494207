// Note [glibc floor]
// The addons link libstdc++ statically (Note [portable addons], CMakeLists.txt). GCC 12's static
// libstdc++ drags in std::random_device (through its string instantiations), which calls
// arc4random, a glibc 2.36 function: that one symbol would raise the prebuilds' floor from glibc
// 2.34 (pthread and dl functions) to 2.36. No code of ours uses random_device, so each addon
// carries this private arc4random instead (hidden: it is bound inside the addon and never
// exported), reading the kernel's random source through getrandom (glibc 2.25). scripts/prebuild.js
// checks the floor with objdump -T.
#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) std::uint32_t arc4random(void) {
  std::uint32_t value = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(&value);
  std::size_t got = 0;
  while (got < sizeof value) {
    const ssize_t n = getrandom(bytes + got, sizeof value - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);  // else EINTR: the call is retried
  }
  return value;
}
