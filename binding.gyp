{
  "targets": [
    {
      "target_name": "koala_optim",
      "sources": [
        "native/binding/addon.cc",
        "native/core/plan.cpp",
        "native/cpu/pool.cpp",
        "native/cpu/optimizer.cpp",
        "native/cpu/stream.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native",
        "native/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    }
  ]
}
