// kiln.hpp: a thin C++ layer over kiln.h (C++11). RAII handles; errors as kiln::Error exceptions,
// or, with KILN_NO_EXCEPTIONS defined, as a returned kiln_status plus kiln::Module::last_error().
//
//     kiln::Module m("model.kiln");                    // throws kiln::Error on a bad file
//     kiln::Graph g = m.graph("main");
//     int64_t n = 1024;
//     g.run({kiln_arg_f64("a", 2.0), kiln_arg_array("y", KILN_F32, ys.data(), 1, &n)});
#ifndef KILN_HPP
#define KILN_HPP

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "kiln.h"

#ifndef KILN_NO_EXCEPTIONS
#include <stdexcept>
#endif

namespace kiln {

#ifndef KILN_NO_EXCEPTIONS
// Thrown for every failing call; code() is the kiln_status, what() the message.
class Error : public std::runtime_error {
public:
    explicit Error(const kiln_error &e) : std::runtime_error(e.message), code_(e.code) {}
    kiln_status code() const noexcept { return code_; }

private:
    kiln_status code_;
};
#endif

namespace detail {
inline kiln_status check(kiln_status st, const kiln_error &e) {
#ifndef KILN_NO_EXCEPTIONS
    if (st != KILN_OK) throw Error(e);
#else
    (void)e;
#endif
    return st;
}
}  // namespace detail

// A graph of a Module (borrowed: valid while its Module lives).
class Graph {
public:
    Graph() = default;
    explicit Graph(const kiln_graph *g) : g_(g) {}
    const char *name() const { return kiln_graph_name(g_); }
    size_t arg_count() const { return kiln_graph_arg_count(g_); }
    kiln_arg_info arg_info(size_t i) const {
        kiln_arg_info info{};
        kiln_graph_arg_info(g_, i, &info);
        return info;
    }
    // Check every argument, then run once (see kiln_graph_run).
    kiln_status run(const kiln_arg *args, size_t n) const {
        return detail::check(kiln_graph_run(g_, args, n, &err_), err_);
    }
    kiln_status run(std::initializer_list<kiln_arg> args) const { return run(args.begin(), args.size()); }
    kiln_status run(const std::vector<kiln_arg> &args) const { return run(args.data(), args.size()); }
    // On a CUDA stream (a CUstream; nullptr: the default stream); see kiln_graph_run_on_stream.
    kiln_status run_on_stream(const kiln_arg *args, size_t n, void *stream) const {
        return detail::check(kiln_graph_run_on_stream(g_, args, n, stream, &err_), err_);
    }
    kiln_status run_on_stream(std::initializer_list<kiln_arg> args, void *stream) const {
        return run_on_stream(args.begin(), args.size(), stream);
    }
    const kiln_error &last_error() const { return err_; }
    explicit operator bool() const { return g_ != nullptr; }
    const kiln_graph *get() const { return g_; }

private:
    const kiln_graph *g_ = nullptr;
    mutable kiln_error err_{};
};

// An exported kernel of a Module (borrowed). Arguments with a nullptr name are positional.
class Kernel {
public:
    Kernel() = default;
    explicit Kernel(const kiln_kernel *k) : k_(k) {}
    const char *name() const { return kiln_kernel_name(k_); }
    size_t arg_count() const { return kiln_kernel_arg_count(k_); }
    kiln_arg_info arg_info(size_t i) const {
        kiln_arg_info info{};
        kiln_kernel_arg_info(k_, i, &info);
        return info;
    }
    // Bind, check every argument, then run once (see kiln_kernel_call).
    kiln_status call(const kiln_arg *args, size_t n) const {
        return detail::check(kiln_kernel_call(k_, args, n, &err_), err_);
    }
    kiln_status call(std::initializer_list<kiln_arg> args) const { return call(args.begin(), args.size()); }
    kiln_status call(const std::vector<kiln_arg> &args) const { return call(args.data(), args.size()); }
    kiln_status call_on_stream(std::initializer_list<kiln_arg> args, void *stream) const {
        return detail::check(kiln_kernel_call_on_stream(k_, args.begin(), args.size(), stream, &err_), err_);
    }
    const kiln_error &last_error() const { return err_; }
    explicit operator bool() const { return k_ != nullptr; }
    const kiln_kernel *get() const { return k_; }

private:
    const kiln_kernel *k_ = nullptr;
    mutable kiln_error err_{};
};

// An owned, loaded .kiln file. Move-only; the code is unmapped when it is destroyed.
class Module {
public:
    Module() = default;
    explicit Module(const std::string &path) { load_file(path); }
    Module(const std::string &path, const kiln_load_options &options) { load_file(path, &options); }
    Module(const void *data, size_t size) { load_memory(data, size); }
    ~Module() { kiln_module_free(m_); }
    Module(const Module &) = delete;
    Module &operator=(const Module &) = delete;
    Module(Module &&o) noexcept : m_(o.m_), err_(o.err_) { o.m_ = nullptr; }
    Module &operator=(Module &&o) noexcept {
        if (this != &o) {
            kiln_module_free(m_);
            m_ = o.m_;
            err_ = o.err_;
            o.m_ = nullptr;
        }
        return *this;
    }

    kiln_status load_file(const std::string &path, const kiln_load_options *options = nullptr) {
        reset();
        return detail::check(kiln_module_load_file_ex(path.c_str(), options, &m_, &err_), err_);
    }
    kiln_status load_memory(const void *data, size_t size, const kiln_load_options *options = nullptr) {
        reset();
        return detail::check(kiln_module_load_memory_ex(data, size, options, &m_, &err_), err_);
    }
    void reset() {
        kiln_module_free(m_);
        m_ = nullptr;
    }

    // The graph named `name`; throws (or returns an empty Graph) when there is none.
    Graph graph(const std::string &name) const {
        const kiln_graph *g = kiln_module_find_graph(m_, name.c_str());
        if (!g) not_found("graph", name);
        return Graph(g);
    }
    // The exported kernel named `name`; throws (or returns an empty Kernel) when there is none.
    Kernel kernel(const std::string &name) const {
        const kiln_kernel *k = kiln_module_find_kernel(m_, name.c_str());
        if (!k) not_found("kernel", name);
        return Kernel(k);
    }
    std::vector<Kernel> kernels() const {
        std::vector<Kernel> out;
        for (size_t i = 0; i < kiln_module_kernel_count(m_); i++) out.emplace_back(kiln_module_kernel(m_, i));
        return out;
    }
    // Fields: describe, copy out, copy in (see kiln_module_find_field and friends).
    kiln_field_info field(const std::string &name) const {
        kiln_field_info info{};
        detail::check(kiln_module_find_field(m_, name.c_str(), &info, &err_), err_);
        return info;
    }
    std::vector<kiln_field_info> fields() const {
        std::vector<kiln_field_info> out(kiln_module_field_count(m_));
        for (size_t i = 0; i < out.size(); i++) kiln_module_field_info(m_, i, &out[i]);
        return out;
    }
    kiln_status read_field(const std::string &name, void *dst, size_t nbytes) const {
        return detail::check(kiln_module_read_field(m_, name.c_str(), dst, nbytes, &err_), err_);
    }
    kiln_status write_field(const std::string &name, const void *src, size_t nbytes) {
        return detail::check(kiln_module_write_field(m_, name.c_str(), src, nbytes, &err_), err_);
    }
    // The random-number state of kl.random: restart it, or read it.
    kiln_status seed(uint64_t s) { return detail::check(kiln_module_seed(m_, s, &err_), err_); }
    std::array<uint32_t, 4> rng_state() const {
        std::array<uint32_t, 4> st{};
        detail::check(kiln_module_rng_state(m_, st.data(), &err_), err_);
        return st;
    }
    kiln_device device() const { return kiln_module_device(m_); }
    // Memory for array arguments on the module's device (see kiln_device_alloc).
    void *alloc(size_t nbytes) const {
        void *p = nullptr;
        detail::check(kiln_device_alloc(m_, nbytes, &p, &err_), err_);
        return p;
    }
    void free(void *p) const { kiln_device_free(m_, p); }
    kiln_status upload(void *dst, const void *src, size_t nbytes) const {
        return detail::check(kiln_device_upload(m_, dst, src, nbytes, &err_), err_);
    }
    kiln_status download(void *dst, const void *src, size_t nbytes) const {
        return detail::check(kiln_device_download(m_, dst, src, nbytes, &err_), err_);
    }
    kiln_status synchronize(void *stream = nullptr) const {
        return detail::check(kiln_module_synchronize(m_, stream, &err_), err_);
    }
    std::vector<Graph> graphs() const {
        std::vector<Graph> out;
        for (size_t i = 0; i < kiln_module_graph_count(m_); i++) out.emplace_back(kiln_module_graph(m_, i));
        return out;
    }
    kiln_status set_num_threads(int n) { return detail::check(kiln_module_set_num_threads(m_, n, &err_), err_); }
    int num_threads() const { return kiln_module_num_threads(m_); }
    const char *arch() const { return kiln_module_arch(m_); }
    const char *cpu() const { return kiln_module_cpu(m_); }
    const kiln_error &last_error() const { return err_; }
    explicit operator bool() const { return m_ != nullptr; }
    kiln_module *get() const { return m_; }

private:
    void not_found(const char *what, const std::string &name) const {
        kiln_error e{};
        e.code = KILN_ERR_NOT_FOUND;
        std::string msg = std::string("no ") + what + " named '" + name + "'";
        msg.copy(e.message, sizeof e.message - 1);
        err_ = e;
        detail::check(KILN_ERR_NOT_FOUND, err_);
    }

    kiln_module *m_ = nullptr;
    mutable kiln_error err_{};
};

}  // namespace kiln

#endif  // KILN_HPP
