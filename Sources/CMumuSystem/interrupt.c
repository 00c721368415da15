#define _GNU_SOURCE
#include "mumu_interrupt.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAPACITY 256

/* Slots hold malloc'ed paths; the handler reads them without the lock (a slot is either NULL or a whole string:
 * stores are single pointer writes, and a string is freed only after its slot was cleared). */
static char *volatile slots[CAPACITY];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static volatile sig_atomic_t requested = 0;
static volatile sig_atomic_t cooperative = 0;

static void remove_temporaries(void) {
    for (int i = 0; i < CAPACITY; i++) {
        char *p = slots[i];
        if (p) unlink(p);
    }
}

static void handler(int sig) {
    if (cooperative > 0 && requested == 0) {
        requested = sig;
        return;
    }
    remove_temporaries();
    _exit(128 + sig);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

void mumu_interrupt_install(void) { pthread_once(&once, install); }

int mumu_interrupt_register_temporary(const char *path) {
    mumu_interrupt_install();
    char *copy = strdup(path);
    if (!copy) return 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < CAPACITY; i++) {
        if (!slots[i]) {
            slots[i] = copy;
            pthread_mutex_unlock(&lock);
            return 1;
        }
    }
    pthread_mutex_unlock(&lock);
    free(copy);
    return 0;
}

void mumu_interrupt_unregister_temporary(const char *path) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < CAPACITY; i++) {
        char *p = slots[i];
        if (p && strcmp(p, path) == 0) {
            slots[i] = NULL;
            free(p);
        }
    }
    pthread_mutex_unlock(&lock);
}

void mumu_interrupt_enter_cooperative(void) {
    mumu_interrupt_install();
    pthread_mutex_lock(&lock);
    cooperative = cooperative + 1;
    pthread_mutex_unlock(&lock);
}

void mumu_interrupt_leave_cooperative(void) {
    pthread_mutex_lock(&lock);
    if (cooperative > 0) cooperative = cooperative - 1;
    pthread_mutex_unlock(&lock);
}

int mumu_interrupt_requested(void) { return requested; }

void mumu_interrupt_clear(void) { requested = 0; }
