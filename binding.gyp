{
  "target_defaults": {
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "native",
      "native/include"
    ],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "cflags!": ["-fno-exceptions", "-O2"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-Wall", "-Wextra", "-Wno-psabi"]
  },
  "targets": [
    {
      "target_name": "koala_optim",
      "sources": [
        "native/binding/cpu_addon.cc",
        "native/core/plan.cpp",
        "native/core/overlap.cpp",
        "native/cpu/pool.cpp",
        "native/cpu/kernels.cpp",
        "native/cpu/kernels_baseline.cpp",
        "native/cpu/optimizer.cpp"
      ],
      "libraries": ["-lpthread"],
      "ldflags": ["-Wl,-z,nodelete"],
      "conditions": [
        ["target_arch=='x64'", {
          "dependencies": ["koala_kernels_avx2", "koala_kernels_avx512"],
          "defines": ["KOALA_HAVE_AVX2", "KOALA_HAVE_AVX512"]
        }]
      ]
    },
    {
      "target_name": "koala_kernels_avx2",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx2.cpp"],
      "cflags_cc": ["-mavx2", "-mfma"]
    },
    {
      "target_name": "koala_kernels_avx512",
      "type": "static_library",
      "sources": ["native/cpu/kernels_avx512.cpp"],
      "cflags_cc": ["-mavx512f", "-mprefer-vector-width=512"]
    }
  ]
}
