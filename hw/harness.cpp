// Standalone Verilator main around `nsm_core`: the device UART bridged to stdin/stdout.
//
// Bytes read from stdin are serialized onto uart_rx (8N1, BAUD_DIVISOR clocks per bit); bits
// from uart_tx are deserialized and each byte is written to stdout at once (flushed). The clock
// runs while there is work: input to send, a byte on either line, the device busy, or less than
// QUIET_CYCLES since the last UART activity (so that the device's inter-byte timeout can fire).
// Otherwise the harness blocks in poll() on stdin and costs nothing. It exits on stdin EOF once
// the UART has been quiet and the device idle for QUIET_CYCLES, and prints on stderr the cycles
// simulated. Built by `hw.harness.build_harness(config, baud_divisor=...)`.

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <deque>
#include <memory>

#include "Vnsm_core.h"
#include "verilated.h"

#ifndef BAUD_DIVISOR
#error "BAUD_DIVISOR (clock cycles per UART bit) must be defined"
#endif
#ifndef QUIET_CYCLES
#error "QUIET_CYCLES (idle clocks before the harness sleeps or exits) must be defined"
#endif

static const uint64_t kReset = 8;            // cycles of reset at power-up
static const uint64_t kPollEvery = 4096;     // cycles between stdin polls while running

double sc_time_stamp() { return 0; }

// 8N1 serializer for uart_rx: start bit, 8 data bits LSB first, one stop bit.
struct Serializer {
    std::deque<uint8_t> queue;
    int bit = -1;              // -1: idle; 0: start; 1..8: data; 9: stop
    uint16_t shift = 0;
    uint64_t left = 0;         // cycles left in the current bit

    bool active() const { return bit >= 0 || !queue.empty(); }

    // Line level for this cycle.
    int step() {
        if (bit < 0) {
            if (queue.empty()) return 1;
            shift = queue.front();
            queue.pop_front();
            bit = 0;
            left = BAUD_DIVISOR;
        }
        int level = bit == 0 ? 0 : bit == 9 ? 1 : (shift >> (bit - 1)) & 1;
        if (--left == 0) {
            bit = bit == 9 ? -1 : bit + 1;
            left = BAUD_DIVISOR;
        }
        return level;
    }
};

// 8N1 deserializer for uart_tx: samples each bit in its middle.
struct Deserializer {
    int bit = -1;              // -1: idle; 0: start; 1..8: data; 9: stop
    uint64_t wait = 0;         // cycles until the next sample
    uint16_t shift = 0;

    bool active() const { return bit >= 0; }

    // Returns a received byte (0..255), -2 on a framing error, or -1.
    int step(int line) {
        if (bit < 0) {
            if (line == 0) {
                bit = 0;
                wait = BAUD_DIVISOR / 2;
            }
            return -1;
        }
        if (--wait > 0) return -1;
        wait = BAUD_DIVISOR;
        if (bit == 0) {
            if (line != 0) bit = -1;      // a glitch, not a start bit
            else bit = 1;
            shift = 0;
            return -1;
        }
        if (bit <= 8) {
            shift |= (line & 1) << (bit - 1);
            bit++;
            return -1;
        }
        bit = -1;
        return line ? shift : -2;
    }
};

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<Vnsm_core>(context.get());

    Serializer ser;
    Deserializer des;
    uint64_t cycles = 0, since_activity = 0, framing_errors = 0, last_line_activity = 0;
    bool eof = false;
    timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        cycles++;
    };

    // Power-up reset, line idle.
    top->uart_rx = 1;
    top->rst = 1;
    for (uint64_t i = 0; i < kReset; i++) tick();
    top->rst = 0;

    uint8_t buf[4096];
    for (;;) {
        bool work = ser.active() || des.active() || top->busy || since_activity < QUIET_CYCLES;
        if (!work && eof) break;
        // Poll stdin: without waiting while running, blocking while nothing happens.
        if (!eof && (!work || cycles % kPollEvery == 0)) {
            pollfd p = {0, POLLIN, 0};
            int r = poll(&p, 1, work ? 0 : -1);
            if (r < 0 && errno != EINTR) break;
            if (r > 0) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n > 0) {
                    ser.queue.insert(ser.queue.end(), buf, buf + n);
                    since_activity = 0;
                } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                    eof = true;
                }
            }
            if (!work && ser.queue.empty()) continue;
        }
        // One clock: drive uart_rx, sample uart_tx.
        top->uart_rx = ser.step();
        tick();
        int got = des.step(top->uart_tx);
        // Busy counts as activity: the answer an inference ends with follows a few cycles
        // after busy falls, and the harness must still be clocking then.
        if (ser.active() || des.active() || top->busy) since_activity = 0;
        if (ser.active() || des.active()) last_line_activity = cycles;
        else since_activity++;
        if (got >= 0) {
            uint8_t byte = (uint8_t)got;
            if (write(1, &byte, 1) != 1) break;   // the reader went away
        } else if (got == -2) {
            framing_errors++;
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    top->final();
    fprintf(stderr, "nsm_harness: %llu cycles simulated in %.3f s, %llu framing errors, "
            "last UART activity at cycle %llu\n", (unsigned long long)cycles, secs,
            (unsigned long long)framing_errors, (unsigned long long)last_line_activity);
    return 0;
}
