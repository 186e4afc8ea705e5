/* Intrusive doubly linked lists. An item is a struct with `prev` and `next`
 * pointers to its own type; a list is a head pointer, plus a tail pointer
 * where order matters (a queue). Removing leaves the item's own links as
 * they were, so a loop may still step past an item it just unlinked. The
 * arguments are evaluated more than once: pass plain lvalues. */
#pragma once

#define CVM_LIST_PREPEND(head, item)                                                               \
        do {                                                                                       \
                (item)->prev = NULL;                                                               \
                (item)->next = (head);                                                             \
                if (head)                                                                          \
                        (head)->prev = (item);                                                     \
                (head) = (item);                                                                   \
        } while (0)

#define CVM_LIST_REMOVE(head, item)                                                                \
        do {                                                                                       \
                if ((item)->prev)                                                                  \
                        (item)->prev->next = (item)->next;                                         \
                else                                                                               \
                        (head) = (item)->next;                                                     \
                if ((item)->next)                                                                  \
                        (item)->next->prev = (item)->prev;                                         \
        } while (0)

#define CVM_QUEUE_APPEND(head, tail, item)                                                         \
        do {                                                                                       \
                (item)->next = NULL;                                                               \
                (item)->prev = (tail);                                                             \
                if (tail)                                                                          \
                        (tail)->next = (item);                                                     \
                else                                                                               \
                        (head) = (item);                                                           \
                (tail) = (item);                                                                   \
        } while (0)

#define CVM_QUEUE_REMOVE(head, tail, item)                                                         \
        do {                                                                                       \
                if (!(item)->next)                                                                 \
                        (tail) = (item)->prev;                                                     \
                CVM_LIST_REMOVE(head, item);                                                       \
        } while (0)
